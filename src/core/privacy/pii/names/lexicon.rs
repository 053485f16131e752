//! The word lists names are recognised by: the gazetteers shipped in the binary, titles,
//! relations, organisation suffixes and cue words, packed into one lexicon with a flag per
//! list so that each word of a text costs one look-up.

use super::*;

/// FNV-1a: the gazetteers are looked up for every word of every message, and their keys are
/// short, fixed and not attacker-chosen, so SipHash's DoS resistance buys nothing here.
#[derive(Default)]
pub(super) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Words of a gazetteer file, lower-cased.
pub(super) fn gazetteer(text: &'static str) -> impl Iterator<Item = String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(str::to_lowercase)
}

/// Whether `lower` (already lower-cased) is a known given name.
pub fn is_first_name(lower: &str) -> bool {
    lexicon(lower) & FIRST != 0
}

/// Whether `lower` is a known family name.
pub fn is_last_name(lower: &str) -> bool {
    lexicon(lower) & LAST != 0
}

/// The English word list: see the head of `english_words.txt`.
static ENGLISH_WORDS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| {
        include_str!("english_words.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    });

/// Whether `lower` is an English dictionary word (some 64,000, lower-case entries of SCOWL's
/// size-50 list): a larger and looser set than [`is_common_word`], for deciding whether a
/// learned name word is also an everyday word.
pub fn is_dictionary_word(lower: &str) -> bool {
    ENGLISH_WORDS.contains(lower)
}

/// Whether `lower` is a common English word (so a capital letter alone does not make a name).
pub fn is_common_word(lower: &str) -> bool {
    lexicon(lower) & COMMON != 0
}

pub(super) const TITLES: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "prof",
    "sir",
    "madam",
    "dame",
    "herr",
    "frau",
    "mme",
    "mlle",
    "sr",
    "sra",
    "srta",
    "señor",
    "señora",
    "doña",
    "dott",
    "sig",
    "signor",
    "signora",
    "ing",
    "dipl",
    "monsieur",
    "madame",
    "mademoiselle",
];
pub(super) const PARTICLES: &[&str] = &[
    "van", "von", "de", "der", "den", "da", "di", "del", "della", "le", "la", "bin", "ibn", "al",
    "el", "dos", "du", "des", "ten", "ter", "zu", "vom", "los", "las",
];
pub(super) const RELATIONS: &[&str] = &[
    // German, French and Spanish.
    "kunde",
    "kundin",
    "kollege",
    "kollegin",
    "chefin",
    "mitarbeiter",
    "mitarbeiterin",
    "ansprechpartner",
    "ansprechpartnerin",
    "kontoinhaber",
    "kontoinhaberin",
    "inhaber",
    "inhaberin",
    "client",
    "cliente",
    "collègue",
    "titulaire",
    "interlocuteur",
    "interlocutrice",
    "colega",
    "compañero",
    "compañera",
    "jefe",
    "jefa",
    "titular",
    "holder",
    "colleague",
    "coworker",
    "friend",
    "manager",
    "boss",
    "wife",
    "husband",
    "son",
    "daughter",
    "brother",
    "sister",
    "mom",
    "mum",
    "dad",
    "mother",
    "father",
    "partner",
    "neighbour",
    "neighbor",
    "landlord",
    "tenant",
    "teammate",
    "cousin",
    "uncle",
    "aunt",
    "assistant",
    "girlfriend",
    "boyfriend",
    "lawyer",
    "accountant",
    "intern",
    "recruiter",
    "client",
    "customer",
    "patient",
    "nephew",
    "niece",
    "grandma",
    "grandpa",
    "roommate",
    "supervisor",
];
pub(super) const ORG_SUFFIXES: &[&str] = &[
    "Inc",
    "LLC",
    "Ltd",
    "Limited",
    "GmbH",
    "AG",
    "SA",
    "SAS",
    "SARL",
    "PLC",
    "plc",
    "Corp",
    "Corporation",
    "Co",
    "LLP",
    "LP",
    "BV",
    "NV",
    "Pty",
    "SE",
    "KG",
    "KGaA",
    "Stiftung",
    "Gruppe",
    "Groupe",
    "Grupo",
    "Asociados",
    "GbR",
    "OHG",
    "EURL",
    "SNC",
    "Fils",
    "Hijos",
    "Söhne",
    "Oy",
    "AB",
    "ASA",
    "SpA",
    "Srl",
    "KK",
    "Group",
    "Holdings",
    "Partners",
    "Sons",
    "Brothers",
    "Bros",
    "Labs",
    "Technologies",
    "Systems",
    "Solutions",
    "Industries",
    "Bank",
    "Capital",
    "Ventures",
    "Consulting",
    "Foundation",
    "Logistics",
    "Software",
    "Analytics",
    "Pharmaceuticals",
    "Insurance",
];
// The words before a name that say it is one (see `cue_before`), lower-cased.
/// "Dear", "Hi", "Thanks,".
pub(super) const GREETINGS: &[&str] = &[
    "dear",
    "hi",
    "hello",
    "hey",
    "thanks",
    "cheers",
    "regards",
    "sincerely",
    "thx",
    "ty",
];
/// "Best,\n", "Love,": only with a comma or a line break after them.
pub(super) const SIGN_OFFS: &[&str] = &["best", "yours", "love", "warmly"];
/// Verbs whose object is a person: "ask Sjoerd", "cc Aoife".
pub(super) const PERSON_VERBS: &[&str] = &[
    // German and French ("frag mal Gino", "relance Thibaut").
    "frag",
    "fragt",
    "ruf",
    "anrufen",
    "kontaktiere",
    "relance",
    "relancer",
    "rappeler",
    "rappelle",
    "rappelez",
    "ask",
    "asked",
    "tell",
    "told",
    "cc",
    "ping",
    "pinged",
    "remind",
    "reminded",
    "thank",
    "thanked",
    "invite",
    "invited",
    "introduce",
    "introduced",
];
/// "I'm", "with", "from": only a known name after them.
pub(super) const WEAK_CUES: &[&str] = &[
    "i'm", "im", "with", "met", "meet", "contact", "from", "to", "and", "by", "for", "emailed",
    "called", "via", "it's",
];
/// The words `cue_before` compares in pairs or with the gap after them ("my name is",
/// "call me", "named", "name:", "signed,", "thank you", "I am", "this is").
pub(super) const PAIRED_CUES: &[&str] = &[
    "is", "me", "named", "name", "signed", "you", "am", "ist", "bin", "suis", "soy", "ici", "a",
    "à", "mal",
];
/// Suffixes that make an organisation even in lower case ("acme corp").
pub(super) const LEGAL_SUFFIXES: &[&str] = &["inc", "llc", "ltd", "gmbh", "corp", "plc", "llp"];

// What a lower-cased word is, as bit flags: which gazetteers hold it and which roles it
// plays in name detection.
pub(super) const FIRST: u16 = 1;
pub(super) const LAST: u16 = 1 << 1;
pub(super) const COMMON: u16 = 1 << 2;
pub(super) const TITLE: u16 = 1 << 3;
pub(super) const PARTICLE: u16 = 1 << 4;
pub(super) const RELATION: u16 = 1 << 5;
pub(super) const LEGAL: u16 = 1 << 6;
/// The lower case of an organisation suffix; the suffix itself must match as written.
pub(super) const ORG_SUFFIX: u16 = 1 << 7;
pub(super) const GREETING: u16 = 1 << 8;
pub(super) const SIGN_OFF: u16 = 1 << 9;
pub(super) const PERSON_VERB: u16 = 1 << 10;
pub(super) const WEAK_CUE: u16 = 1 << 11;
pub(super) const PAIRED_CUE: u16 = 1 << 12;
/// Whatever `cue_before` takes as the word before a name.
pub(super) const CUE: u16 =
    TITLE | RELATION | GREETING | SIGN_OFF | PERSON_VERB | WEAK_CUE | PAIRED_CUE;

/// Every gazetteer and word list in one map, so that each word of a text costs one hash
/// look-up rather than one per list.
pub(super) static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| {
    let mut lexicon = Lexicon::default();
    let files = [
        (
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/data/pii/first_names.txt"
            )),
            FIRST,
        ),
        (
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/data/pii/surnames.txt"
            )),
            LAST,
        ),
        (
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/data/pii/common_words.txt"
            )),
            COMMON,
        ),
    ];
    for (text, flag) in files {
        for w in gazetteer(text) {
            lexicon.add(&w, flag);
        }
    }
    let lists = [
        (TITLES, TITLE),
        (PARTICLES, PARTICLE),
        (RELATIONS, RELATION),
        (LEGAL_SUFFIXES, LEGAL),
        (ORG_SUFFIXES, ORG_SUFFIX),
        (GREETINGS, GREETING),
        (SIGN_OFFS, SIGN_OFF),
        (PERSON_VERBS, PERSON_VERB),
        (WEAK_CUES, WEAK_CUE),
        (PAIRED_CUES, PAIRED_CUE),
    ];
    for (words, flag) in lists {
        for w in words {
            lexicon.add(&w.to_lowercase(), flag);
        }
    }
    lexicon
});

/// The flags of a lower-cased word (0 when it is in no list).
pub(super) fn lexicon(lower: &str) -> u16 {
    LEXICON.get(lower)
}

/// Lower-cased words and their flags. Almost every word fits in 15 bytes and is kept packed
/// into one integer with its length: a look-up then compares integers in the table instead
/// of following a pointer to each candidate's bytes, which costs a cache miss per word.
#[derive(Default)]
pub(super) struct Lexicon {
    short: HashMap<u128, u16, BuildHasherDefault<PackedHasher>>,
    long: HashMap<String, u16, BuildHasherDefault<Fnv>>,
}

impl Lexicon {
    fn add(&mut self, word: &str, flag: u16) {
        match pack(word.as_bytes()) {
            Some(key) => *self.short.entry(key).or_default() |= flag,
            None => *self.long.entry(word.to_owned()).or_default() |= flag,
        }
    }

    fn get(&self, lower: &str) -> u16 {
        match pack(lower.as_bytes()) {
            Some(key) => self.short.get(&key),
            None => self.long.get(lower),
        }
        .copied()
        .unwrap_or(0)
    }

    /// `get` for an ASCII word in any case, lower-cased as it is packed.
    pub(super) fn get_ascii(&self, word: &str) -> u16 {
        match pack_lower(word.as_bytes()) {
            Some(key) => self.short.get(&key).copied().unwrap_or(0),
            None => self.get(&word.to_ascii_lowercase()),
        }
    }
}

/// `word`'s bytes and, in the last byte, its length, if it has at most 15 bytes.
pub(super) fn pack(word: &[u8]) -> Option<u128> {
    pack_with(word, |b| b)
}

/// `pack` of `word` ASCII-lower-cased.
pub(super) fn pack_lower(word: &[u8]) -> Option<u128> {
    pack_with(word, |b| b.to_ascii_lowercase())
}

pub(super) fn pack_with(word: &[u8], map: impl Fn(u8) -> u8) -> Option<u128> {
    if word.len() > 15 {
        return None;
    }
    let mut packed = [0u8; 16];
    for (p, &b) in packed.iter_mut().zip(word) {
        *p = map(b);
    }
    packed[15] = word.len() as u8;
    Some(u128::from_le_bytes(packed))
}

/// Hashes a packed word with one widening multiply (as rustc's and foldhash's hashers do):
/// the table's hash then costs a few instructions, not one per byte.
#[derive(Default)]
pub(super) struct PackedHasher(u64);

impl Hasher for PackedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; this keeps any other input hashed, if slowly.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, n: u128) {
        let (low, high) = (n as u64, (n >> 64) as u64);
        let product =
            u128::from(low ^ 0x243f_6a88_85a3_08d3) * u128::from(high ^ 0x1319_8a2e_0370_7344);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}
