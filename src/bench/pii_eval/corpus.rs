//! The evaluation corpus: conversation-style messages with labelled PII spans, generated from
//! a fixed seed so every run scores the same text.
//!
//! It is built to be hard for this detector, not to flatter it: about a quarter of the names
//! are not in the shipped gazetteers (only context can find them), names appear in lower case
//! and mid-sentence, phones come in several countries' formats with and without context, and
//! a third of the messages are hard negatives: names that are common words ("Will", "May"),
//! cities that are first names, dates, versions, order numbers, UUIDs, git SHAs, prices,
//! token counts.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::core::privacy::pii::{EntityType, Span};

mod templates;

use templates::{data_message, follow_up, hard_negative, people_message};

/// One message with its gold spans.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    /// The text.
    pub text: String,
    /// Labelled PII, byte offsets into `text`.
    pub spans: Vec<Span>,
}

/// A short conversation: the unit one redaction session covers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conversation {
    /// Its messages, in order.
    pub messages: Vec<Message>,
}

/// Given names from the gazetteer.
const FIRST: &[&str] = &[
    "Dan",
    "Sarah",
    "Priya",
    "Mohammed",
    "Wei",
    "Olga",
    "Carlos",
    "Aisha",
    "James",
    "Emily",
    "Lukas",
    "Chloe",
    "Mateo",
    "Yuki",
    "Fatima",
    "Noah",
    "Hannah",
    "Rahul",
    "Lucía",
    "Jürgen",
    "Ingrid",
    "Kwame",
    "Elena",
    "Marcus",
    "Sofia",
    "Tomasz",
    "Amara",
    "Kenji",
    "Isabella",
    "Oliver",
    "Nadia",
    "Pierre",
    "Giulia",
    "Ahmed",
    "Ananya",
    "Thabo",
    "Magdalena",
    "Hiroshi",
    "Rebecca",
    "Dmitri",
    "Layla",
    "Sebastian",
    "Zainab",
    "Brian",
    "Megan",
    "Victor",
    "Keith",
    "Natalie",
    "Arjun",
    "Joanna",
];
/// Given names the gazetteer does not have: only context finds these.
pub const HELD_OUT_FIRST: &[&str] = &[
    "Zephyrine",
    "Xiomara",
    "Thandeka",
    "Olwethu",
    "Cosima",
    "Leocadia",
    "Torvald",
    "Eulalia",
    "Radomir",
    "Siobhan",
    "Niamh",
    "Saoirse",
    "Oisin",
    "Aoife",
    "Cillian",
    "Ottoline",
    "Evander",
    "Lysander",
    "Peregrine",
    "Casimir",
    "Anouk",
    "Sjoerd",
    "Wouter",
    "Femke",
    "Chidinma",
    "Adaeze",
    "Tendai",
    "Farai",
    "Naledi",
    "Leilani",
    "Anahera",
    "Wiremu",
];
const LAST: &[&str] = &[
    "Johnson",
    "Miller",
    "Patel",
    "Garcia",
    "Nguyen",
    "Kowalski",
    "Schmidt",
    "Rossi",
    "Okafor",
    "Tanaka",
    "Kim",
    "Müller",
    "Dubois",
    "Silva",
    "Ivanova",
    "Hassan",
    "Chen",
    "Fernández",
    "O'Brien",
    "Andersen",
    "Mensah",
    "Khan",
    "Novak",
    "Yamamoto",
    "Walsh",
    "Reyes",
    "Fischer",
    "Murphy",
    "Sato",
    "Campbell",
    "Singh",
    "Lewandowski",
    "Ortega",
    "Larsen",
    "Moreau",
];
/// Family names the gazetteer does not have.
pub const HELD_OUT_LAST: &[&str] = &[
    "Okonjo",
    "Vandersloot",
    "Quintanilla",
    "Abernathy",
    "Przybylski",
    "Oyelaran",
    "Thistlewood",
    "Ravenscroft",
    "Achterberg",
    "Nakashima",
    "Featherstone",
    "Zbikowski",
];
const ORG_NAMES: &[&str] = &[
    "Northwind Traders",
    "Globex",
    "Initech",
    "Umbrella Dynamics",
    "Hooli",
    "Vandelay Industries",
    "Stark Robotics",
    "Wayne Logistics",
    "Cyberdyne",
    "Pied Piper",
    "Soylent Foods",
    "Aperture Science",
    "Tyrell Systems",
    "Massive Dynamic",
    "Oscorp",
    "Blue Sun",
    "Kessler Haus",
    "Bergmann Werke",
    "Lumen Analytics",
    "Quantico Freight",
];
const ORG_SUFFIX: &[&str] = &[
    "Inc", "LLC", "Ltd", "GmbH", "Corp", "PLC", "AG", "SA", "Group", "Holdings",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.org",
    "corp.example.net",
    "gmail.example",
    "outlook.example",
    "uni.example.ac.uk",
];
const US_STREETS: &[&str] = &[
    "Main",
    "Oak",
    "Maple",
    "Cedar",
    "Pennsylvania",
    "Sunset",
    "Lakeview",
    "Washington",
    "Elm",
    "Hillcrest",
    "Park",
];
const US_SUFFIX: &[&str] = &[
    "Street", "St", "Avenue", "Ave", "Road", "Blvd", "Lane", "Drive", "Court", "Way",
];
const US_CITIES: &[(&str, &str)] = &[
    ("Springfield", "IL"),
    ("Portland", "OR"),
    ("Denver", "CO"),
    ("Columbus", "OH"),
    ("Madison", "WI"),
    ("Raleigh", "NC"),
    ("Tucson", "AZ"),
];
const UK_STREETS: &[&str] = &[
    "Baker Street",
    "Victoria Road",
    "Church Lane",
    "Mill Close",
    "Station Road",
    "Queens Gardens",
    "High Street",
];
const UK_CITIES: &[(&str, &str)] = &[
    ("London", "NW1 6XE"),
    ("Manchester", "M1 1AE"),
    ("Leeds", "LS1 4AP"),
    ("Bristol", "BS1 5TR"),
    ("Oxford", "OX1 2JD"),
];
const DE_STREETS: &[&str] = &[
    "Hauptstraße",
    "Gartenweg",
    "Bahnhofstraße",
    "Lindenallee",
    "Schillerplatz",
    "Goethestraße",
    "Am Mühlbach",
];
const DE_CITIES: &[&str] = &["Berlin", "München", "Hamburg", "Köln", "Leipzig", "Dresden"];
const FR_STREETS: &[&str] = &[
    "rue de la Paix",
    "avenue Victor Hugo",
    "boulevard Saint-Michel",
    "rue des Lilas",
    "place Bellecour",
    "chemin du Moulin",
];
const FR_CITIES: &[(&str, &str)] = &[
    ("Paris", "75002"),
    ("Lyon", "69002"),
    ("Marseille", "13001"),
    ("Toulouse", "31000"),
    ("Nantes", "44000"),
];

/// Builds one message, labelling spans as it goes.
#[derive(Default)]
struct Msg {
    text: String,
    spans: Vec<Span>,
}

impl Msg {
    fn t(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    fn e(&mut self, entity: EntityType, s: &str) -> &mut Self {
        let start = self.text.len();
        self.text.push_str(s);
        self.spans.push(Span {
            start,
            end: self.text.len(),
            entity,
        });
        self
    }
    fn done(self) -> Message {
        Message {
            text: self.text,
            spans: self.spans,
        }
    }
}

/// A person of the corpus.
#[derive(Clone)]
struct Person {
    first: String,
    last: String,
}

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.rng).expect("lists are not empty")
    }
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect()
    }

    fn person(&mut self) -> Person {
        let first = if self.chance(0.25) {
            *self.pick(HELD_OUT_FIRST)
        } else {
            *self.pick(FIRST)
        };
        let last = if self.chance(0.2) {
            *self.pick(HELD_OUT_LAST)
        } else {
            *self.pick(LAST)
        };
        Person {
            first: first.to_owned(),
            last: last.to_owned(),
        }
    }

    fn email_of(&mut self, p: &Person) -> String {
        let ascii = |s: &str| -> String {
            s.chars()
                .filter_map(|c| match c {
                    'ü' => Some('u'),
                    'í' | 'ï' => Some('i'),
                    'á' => Some('a'),
                    'é' => Some('e'),
                    c if c.is_ascii_alphabetic() => Some(c.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        };
        let (f, l) = (ascii(&p.first), ascii(&p.last));
        let domain = self.pick(DOMAINS);
        match self.rng.random_range(0..7) {
            5 => format!("{}.{}+invoices@{domain}", title(&f), title(&l)),
            6 => format!(
                "{f}{}@{}",
                self.rng.random_range(1970..2005),
                domain.to_uppercase()
            ),
            0 => format!("{f}.{l}@{domain}"),
            1 => format!("{}{l}@{domain}", &f[..1]),
            2 => format!("{f}_{l}{}@{domain}", self.rng.random_range(1..99)),
            3 => format!("{f}@{domain}"),
            _ => format!(
                "{}{}@{domain}",
                self.pick(&["support", "team", "hello", "billing", "dev"]),
                self.rng.random_range(1..9)
            ),
        }
    }

    fn phone(&mut self) -> String {
        match self.rng.random_range(0..16) {
            10 => format!("+1-{}-{}-{}", self.area(), self.area(), self.digits(4)),
            11 => format!("+44 (0)20 {} {}", self.digits(4), self.digits(4)),
            12 => format!("{}.{}.{}", self.area(), self.area(), self.digits(4)),
            13 => format!(
                "+353 8{} {} {}",
                self.rng.random_range(3..10),
                self.digits(3),
                self.digits(4)
            ),
            14 => format!("+81 3-{}-{}", self.digits(4), self.digits(4)),
            15 => format!("(02) {} {}", self.digits(4), self.digits(4)),
            0 => format!("+1 {} {} {}", self.area(), self.area(), self.digits(4)),
            1 => format!("({}) {}-{}", self.area(), self.area(), self.digits(4)),
            2 => format!("{}-{}-{}", self.area(), self.area(), self.digits(4)),
            3 => format!("+44 20 {} {}", self.digits(4), self.digits(4)),
            4 => format!("07{} {}", self.digits(3), self.digits(6)),
            5 => format!("+49 30 {}", self.digits(8)),
            6 => format!(
                "+33 6 {} {} {} {}",
                self.digits(2),
                self.digits(2),
                self.digits(2),
                self.digits(2)
            ),
            7 => format!("+91 9{} {}", self.digits(4), self.digits(5)),
            8 => format!("04{} {} {}", self.digits(2), self.digits(3), self.digits(3)),
            _ => format!("+61 2 {} {}", self.digits(4), self.digits(4)),
        }
    }

    /// A NANP area or exchange code (2–9 then two digits).
    fn area(&mut self) -> String {
        format!("{}{}", self.rng.random_range(2..10), self.digits(2))
    }

    fn card(&mut self) -> String {
        let (prefix, len) = *self.pick(&[
            ("4", 16),
            ("51", 16),
            ("55", 16),
            ("2221", 16),
            ("37", 15),
            ("6011", 16),
            ("3530", 16),
        ]);
        let mut d = format!("{prefix}{}", self.digits(len - prefix.len() - 1));
        d.push(luhn_digit(&d));
        let sep = *self.pick(&[" ", "-", ""]);
        if len == 15 {
            format!("{}{sep}{}{sep}{}", &d[..4], &d[4..10], &d[10..])
        } else {
            d.as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).expect("digits"))
                .collect::<Vec<_>>()
                .join(sep)
        }
    }

    fn iban(&mut self) -> String {
        let (cc, len) = *self.pick(&[
            ("DE", 22),
            ("GB", 22),
            ("FR", 27),
            ("NL", 18),
            ("ES", 24),
            ("IT", 27),
            ("CH", 21),
            ("BE", 16),
        ]);
        let bban = if cc == "GB" || cc == "NL" {
            format!(
                "{}{}",
                self.pick(&["WEST", "ABNA", "BARC", "INGB", "RABO"]),
                self.digits(len - 8)
            )
        } else {
            self.digits(len - 4)
        };
        let check = 98 - mod97(&format!("{bban}{cc}00"));
        let compact = format!("{cc}{check:02}{bban}");
        if self.chance(0.5) {
            compact
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).expect("ascii"))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            compact
        }
    }

    fn ip(&mut self) -> String {
        match self.rng.random_range(0..6) {
            4 => format!(
                "2001:0db8:85a3:{:04x}:0000:8a2e:0370:{:04x}",
                self.rng.random_range(0..0xffff),
                self.rng.random_range(0..0xffff)
            ),
            5 => format!(
                "fe80::{:x}:{:x}ff:fe{:x}:{:x}",
                self.rng.random_range(1..0xffff),
                self.rng.random_range(1..0xff),
                self.rng.random_range(1..0xff),
                self.rng.random_range(1..0xffff)
            ),
            0 => format!(
                "192.168.{}.{}",
                self.rng.random_range(0..255),
                self.rng.random_range(1..255)
            ),
            1 => format!(
                "10.{}.{}.{}",
                self.rng.random_range(0..255),
                self.rng.random_range(0..255),
                self.rng.random_range(1..255)
            ),
            2 => format!(
                "{}.{}.{}.{}",
                self.rng.random_range(11..223),
                self.rng.random_range(0..255),
                self.rng.random_range(0..255),
                self.rng.random_range(1..255)
            ),
            _ => format!(
                "2001:db8:{:x}::{:x}:{:x}",
                self.rng.random_range(0..0xffff),
                self.rng.random_range(1..0xffff),
                self.rng.random_range(0..0xffff)
            ),
        }
    }

    fn ssn(&mut self) -> String {
        let area = self.rng.random_range(1..900);
        let area = if area == 666 { 667 } else { area };
        format!(
            "{area:03}-{:02}-{:04}",
            self.rng.random_range(1..100),
            self.rng.random_range(1..10000)
        )
    }

    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n).map(|_| char::from(*self.pick(A))).collect()
    }

    fn password(&mut self) -> String {
        let word = *self.pick(&[
            "sunshine",
            "dragon",
            "Winter",
            "monkey",
            "Falcon",
            "hunter",
            "letmein",
            "Tr0ub4dor",
        ]);
        let sym = *self.pick(&["!", "#", "$", "&", "", "?"]);
        format!("{word}{}{sym}", self.rng.random_range(1..2030))
    }

    fn secret(&mut self) -> String {
        match self.rng.random_range(0..12) {
            8 => format!("github_pat_{}_{}", self.alnum(22), self.alnum(59)),
            9 => format!("rk_live_{}", self.alnum(32)),
            10 => format!("glpat-{}", self.alnum(20)),
            11 => format!("hf_{}", self.alnum(34)),
            0 => format!("AKIA{}", self.alnum(16).to_uppercase()),
            1 => format!("ghp_{}", self.alnum(36)),
            2 => format!("sk-proj-{}", self.alnum(40)),
            3 => format!("sk-ant-api03-{}", self.alnum(48)),
            4 => format!("xoxb-{}-{}", self.digits(12), self.alnum(24)),
            5 => format!("sk_live_{}", self.alnum(24)),
            6 => format!(
                "eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}",
                self.alnum(30),
                self.alnum(43)
            ),
            _ => format!("AIza{}", self.alnum(35)),
        }
    }

    fn address(&mut self) -> String {
        match self.rng.random_range(0..6) {
            4 => {
                let street = self.pick(US_STREETS).to_lowercase();
                let city = self.pick(US_CITIES).0.to_lowercase();
                format!("{} {street} street, {city}", self.rng.random_range(1..999))
            }
            5 => {
                let street = self.pick(US_STREETS);
                format!(
                    "Apartment {}, {} {street} Road",
                    self.rng.random_range(1..50),
                    self.rng.random_range(1..400)
                )
            }
            0 => {
                let (city, st) = *self.pick(US_CITIES);
                let unit = if self.chance(0.3) {
                    format!(", Apt {}", self.rng.random_range(1..40))
                } else {
                    String::new()
                };
                format!(
                    "{} {} {}{unit}, {city}, {st} {}",
                    self.rng.random_range(1..9999),
                    self.pick(US_STREETS),
                    self.pick(US_SUFFIX),
                    self.digits(5)
                )
            }
            1 => {
                let (city, pc) = *self.pick(UK_CITIES);
                format!(
                    "{} {}, {city} {pc}",
                    self.rng.random_range(1..300),
                    self.pick(UK_STREETS)
                )
            }
            2 => format!(
                "{} {}, {} {}",
                self.pick(DE_STREETS),
                self.rng.random_range(1..120),
                self.digits(5),
                self.pick(DE_CITIES)
            ),
            _ => {
                let (city, pc) = *self.pick(FR_CITIES);
                format!(
                    "{} {}, {pc} {city}",
                    self.rng.random_range(1..150),
                    self.pick(FR_STREETS)
                )
            }
        }
    }

    fn org(&mut self) -> (String, bool) {
        let name = *self.pick(ORG_NAMES);
        if self.chance(0.6) {
            (format!("{name} {}", self.pick(ORG_SUFFIX)), true)
        } else {
            (name.to_owned(), false)
        }
    }
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn luhn_digit(partial: &str) -> char {
    for d in b'0'..=b'9' {
        let candidate = format!("{partial}{}", char::from(d));
        if crate::core::privacy::pii::validate::luhn(&candidate) {
            return char::from(d);
        }
    }
    unreachable!("one check digit always fits")
}

fn mod97(s: &str) -> u32 {
    s.bytes().fold(0u32, |rem, c| {
        let v = if c.is_ascii_digit() {
            (c - b'0') as u32
        } else {
            (c - b'A') as u32 + 10
        };
        if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        }
    })
}

impl Gen {
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(*self.pick(b"0123456789abcdef")))
            .collect()
    }
}

/// `n` conversations from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<Conversation> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    (0..n)
        .map(|_| {
            let cast = [g.person(), g.person()];
            let turns = g.rng.random_range(2..6);
            let mut messages = Vec::with_capacity(turns);
            let mut mentioned = false;
            for _ in 0..turns {
                let roll = g.rng.random_range(0..100);
                let m = if roll < 30 {
                    mentioned = true;
                    people_message(&mut g, &cast)
                } else if roll < 40 && mentioned {
                    follow_up(&cast[0], &mut g.rng)
                } else if roll < 65 {
                    data_message(&mut g)
                } else {
                    hard_negative(&mut g)
                };
                messages.push(m);
            }
            Conversation { messages }
        })
        .collect()
}

#[cfg(test)]
mod tests;
