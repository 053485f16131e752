//! The message templates of the evaluation corpus: people (with contact details), follow-ups
//! that mention someone again, personal data of every other type, and hard negatives.

use rand::Rng;
use rand::rngs::StdRng;

use super::{Gen, Message, Msg, ORG_NAMES, ORG_SUFFIX, Person};
use crate::core::privacy::pii::EntityType;

/// A message mentioning people (and maybe their contact details).
pub(super) fn people_message(g: &mut Gen, cast: &[Person]) -> Message {
    use EntityType::*;
    let p = &cast[0];
    let q = &cast[1];
    let full = format!("{} {}", p.first, p.last);
    let lower_full = full.to_lowercase();
    let mut m = Msg::default();
    match g.rng.random_range(0..20) {
        0 => m
            .t("Hi, my name is ")
            .e(Person, &full)
            .t(" and I can't log in to my account."),
        1 => m
            .t("hello, i'm ")
            .e(Person, &p.first.to_lowercase())
            .t(" — can you reset my password?"),
        2 => m
            .t("Can you ask ")
            .e(Person, &p.first)
            .t(" to review the pull request before Friday?"),
        3 => m
            .e(Person, &full)
            .t(" said the deployment failed again last night."),
        4 => m
            .t("Dear ")
            .e(Person, &p.first)
            .t(",\nthanks for the quick update on the migration."),
        5 => m.t("Thanks, ").e(Person, &p.first).t("! That fixed it."),
        6 => m
            .t("Let me know if anything else breaks.\n\nBest regards,\n")
            .e(Person, &full),
        7 => m
            .t("my colleague ")
            .e(Person, &p.first)
            .t(" will join the call at 3pm."),
        8 => m
            .t("Please cc ")
            .e(Person, &full)
            .t(" on the thread about the refund."),
        9 => m
            .t("I spoke with Dr. ")
            .e(Person, &p.last)
            .t(" yesterday about the test results."),
        10 => m
            .e(Person, &p.first)
            .t("'s laptop needs a new battery, can IT order one?"),
        11 => m
            .t("The meeting with ")
            .e(Person, &full)
            .t(" and ")
            .e(Person, &format!("{} {}", q.first, q.last))
            .t(" moved to Thursday."),
        12 => m
            .t("this is ")
            .e(Person, &p.first.to_lowercase())
            .t(" from the support team, following up on your ticket."),
        13 => m
            .t("can you ping ")
            .e(Person, &lower_full)
            .t(" about the invoice?"),
        14 => m
            .t("I forwarded it to ")
            .e(Person, &full)
            .t(", she handles billing."),
        15 => {
            let email = g.email_of(p);
            m.t("You can email ")
                .e(Person, &p.first)
                .t(" directly at ")
                .e(Email, &email)
                .t(".")
        }
        16 => {
            let phone = g.phone();
            m.t("Call ")
                .e(Person, &full)
                .t(" on ")
                .e(Phone, &phone)
                .t(" if the server goes down again.")
        }
        17 => {
            let email = g.email_of(p);
            let phone = g.phone();
            m.t("--\n")
                .e(Person, &full)
                .t("\nSenior Engineer\n")
                .e(Phone, &phone)
                .t(" | ")
                .e(Email, &email)
        }
        18 => m
            .t("Ms. ")
            .e(Person, &p.last)
            .t(" approved the budget; ")
            .e(Person, &q.first)
            .t(" will send the PO."),
        _ => m
            .t("ok so ")
            .e(Person, &p.first)
            .t(" and i fixed the flaky test, ")
            .e(Person, &q.first)
            .t(" reviewed it"),
    };
    m.done()
}

/// A follow-up that mentions someone from earlier by first name only, maybe in lower case.
pub(super) fn follow_up(p: &Person, rng: &mut StdRng) -> Message {
    let mut m = Msg::default();
    let name = if rng.random_bool(0.3) {
        p.first.to_lowercase()
    } else {
        p.first.clone()
    };
    match rng.random_range(0..4) {
        0 => m.t("Any news from ").e(EntityType::Person, &name).t("?"),
        1 => m
            .t("I think ")
            .e(EntityType::Person, &name)
            .t(" already merged it."),
        2 => m
            .t("ok, ")
            .e(EntityType::Person, &name)
            .t(" confirmed, closing the ticket."),
        _ => m
            .t("Waiting on ")
            .e(EntityType::Person, &name)
            .t(" for the logs."),
    };
    m.done()
}

pub(super) fn data_message(g: &mut Gen) -> Message {
    use EntityType::*;
    let mut m = Msg::default();
    match g.rng.random_range(0..22) {
        0 => {
            let p = g.person();
            let e = g.email_of(&p);
            m.t("send the report to ").e(Email, &e).t(" please")
        }
        1 => {
            let p = g.phone();
            m.t("my number is ").e(Phone, &p)
        }
        2 => {
            let p = g.phone();
            m.t("Phone: ").e(Phone, &p).t("\nHours: 9-17")
        }
        3 => {
            let p = g.phone();
            m.t("you can reach me at ").e(Phone, &p).t(" after 6.")
        }
        4 => {
            let c = g.card();
            m.t("my card number is ").e(CreditCard, &c).t(", exp 09/27")
        }
        5 => {
            let c = g.card();
            m.t("Charge ").e(CreditCard, &c).t(" for the annual plan.")
        }
        6 => {
            let i = g.iban();
            m.t("Please wire it to IBAN ").e(Iban, &i).t(" by Monday.")
        }
        7 => {
            let i = g.iban();
            m.t("new bank details: ").e(Iban, &i)
        }
        8 => {
            let ip = g.ip();
            m.t("the server at ")
                .e(IpAddress, &ip)
                .t(" is refusing connections")
        }
        9 => {
            let ip = g.ip();
            m.t("login attempt from ")
                .e(IpAddress, &ip)
                .t(" blocked by the firewall.")
        }
        10 => {
            let s = g.ssn();
            m.t("My SSN is ")
                .e(Ssn, &s)
                .t(" if you need it for the form.")
        }
        11 => {
            let s = g.secret();
            m.t("here is my key: ").e(Secret, &s)
        }
        12 => {
            let s = g.secret();
            m.t("export OPENAI_API_KEY=").e(Secret, &s)
        }
        13 => {
            let s = g.secret();
            m.t("I accidentally committed ")
                .e(Secret, &s)
                .t(" to the repo, can we rotate it?")
        }
        14 => {
            let pw = g.password();
            m.t("my password is ")
                .e(Secret, &pw)
                .t(" but it says invalid")
        }
        15 => {
            let pw = g.password();
            match g.rng.random_range(0..4) {
                0 => m.t("db_password: ").e(Secret, &pw),
                1 => {
                    let key = g.alnum(32);
                    m.t("config: {\"api_key\": \"").e(Secret, &key).t("\"}")
                }
                2 => {
                    let key = g.alnum(40);
                    m.t("AWS_SECRET_ACCESS_KEY=").e(Secret, &key)
                }
                _ => {
                    let key = g.alnum(40);
                    m.t("curl -H 'Authorization: Bearer ")
                        .e(Secret, &key)
                        .t("' https://api.example.com")
                }
            }
        }
        16 => {
            let pw = g.alnum(14);
            let url = format!(
                "postgres://app:{pw}@db{}.internal:5432/prod",
                g.rng.random_range(1..9)
            );
            m.t("DATABASE_URL=").e(UrlCredentials, &url)
        }
        17 => {
            let a = g.address();
            m.t("Please ship it to ").e(Address, &a).t(".")
        }
        18 => {
            let a = g.address();
            m.t("my new address is ").e(Address, &a)
        }
        19 => {
            let a = g.address();
            m.t("Invoice address: ").e(Address, &a).t("\nVAT included.")
        }
        20 if g.chance(0.3) => {
            let name = *g.pick(ORG_NAMES);
            m.t("our vendor ")
                .e(Organization, name)
                .t(" raised prices again")
        }
        20 => {
            let (org, _) = g.org();
            m.t("I work at ")
                .e(Organization, &org)
                .t(" as a data engineer.")
        }
        _ => {
            let (org, suffixed) = g.org();
            if suffixed {
                m.t("We signed the contract with ")
                    .e(Organization, &org)
                    .t(" last week.")
            } else {
                let org = format!("{org} {}", g.pick(ORG_SUFFIX));
                m.e(Organization, &org).t(" sent over the revised terms.")
            }
        }
    };
    m.done()
}

/// Text with no PII that a careless detector would flag.
pub(super) fn hard_negative(g: &mut Gen) -> Message {
    let sha = g.hex(40);
    let short = g.hex(7);
    let uuid = format!(
        "{}-{}-4{}-a{}-{}",
        g.hex(8),
        g.hex(4),
        g.hex(3),
        g.hex(3),
        g.hex(12)
    );
    let texts = [
        "Will you send the report before the standup?".to_owned(),
        "We ship the new release in May.".to_owned(),
        "Mark the ticket as done when the tests pass.".to_owned(),
        "I hope the build passes this time.".to_owned(),
        "Grace period for the old API ends tomorrow.".to_owned(),
        "Bill the customer for the extra hours.".to_owned(),
        "I moved to Austin last year and the office is in Victoria.".to_owned(),
        format!(
            "Released 2024-{:02}-{:02} as v1.{}.{}.",
            g.rng.random_range(1..13),
            g.rng.random_range(1..29),
            g.rng.random_range(0..30),
            g.rng.random_range(0..10)
        ),
        format!("Your order #{} has shipped.", g.digits(10)),
        format!(
            "Order number: {}-{}-{}",
            g.digits(4),
            g.digits(4),
            g.digits(4)
        ),
        format!("ticket {} was reopened on 15.03.2024 at 10:30", g.digits(5)),
        format!(
            "Invoice INV-2024-{} is overdue by {} days.",
            g.digits(5),
            g.rng.random_range(2..60)
        ),
        format!("commit {sha} fixed the race; see also {short}."),
        format!("request id {uuid} timed out after 30s"),
        format!(
            "It costs ${},{}.{} per year, or €{}.50 a month.",
            g.rng.random_range(1..9),
            g.digits(3),
            g.digits(2),
            g.rng.random_range(10..99)
        ),
        format!(
            "We now have {} {} active users.",
            g.rng.random_range(1..999),
            g.digits(3)
        ),
        format!(
            "max_tokens: {} and the token count was {}",
            g.rng.random_range(256..8192),
            g.digits(4)
        ),
        "the token expired, please log in again".to_owned(),
        "Password reset link sent, check your inbox.".to_owned(),
        format!(
            "Python 3.{} on Ubuntu 22.04, node 18.{}.0, version 2.0.1.{}",
            g.rng.random_range(8..14),
            g.rng.random_range(0..20),
            g.rng.random_range(0..9)
        ),
        format!(
            "listening on port {}, HTTP 404 for /api/v2/users/{}",
            g.rng.random_range(1024..65535),
            g.digits(6)
        ),
        "We use Jira and Slack, and deploy with Docker on Kubernetes.".to_owned(),
        format!(
            "Build {}.{} failed on 03/15/2024.",
            g.digits(8),
            g.rng.random_range(1..9)
        ),
        format!(
            "The package is at @scope/pkg@{}.{}.{}",
            g.rng.random_range(0..9),
            g.rng.random_range(0..30),
            g.rng.random_range(0..9)
        ),
        "Can you chase the vendor? Hope to hear back by June.".to_owned(),
        "hi there, the nightly job crashed again".to_owned(),
        format!(
            "Temperature dropped to {}.{} degrees; ISBN 978-{}-{}-{}-{}",
            g.rng.random_range(0..30),
            g.rng.random_range(0..9),
            g.digits(1),
            g.digits(3),
            g.digits(5),
            g.digits(1)
        ),
        "The Main Street branch closes early; take the road past the park.".to_owned(),
        "I'll ask Support to check, and tell Legal about the contract.".to_owned(),
        "tell Jenkins to retry the pipeline".to_owned(),
        "May I ask a question about the new pricing?".to_owned(),
        format!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{} deploy@ci is the public key",
            g.alnum(30)
        ),
        format!("Checksum sha256:{} matches.", g.hex(64)),
    ];
    Msg {
        text: g.pick(&texts).clone(),
        spans: Vec::new(),
    }
    .done()
}
