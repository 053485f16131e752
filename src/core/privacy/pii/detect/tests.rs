use super::*;

fn found(text: &str) -> Vec<(EntityType, &str)> {
    detect(text)
        .into_iter()
        .map(|s| (s.entity, &text[s.start..s.end]))
        .collect()
}

fn only(text: &str, entity: EntityType) -> Vec<&str> {
    found(text)
        .into_iter()
        .filter(|(e, _)| *e == entity)
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn emails() {
    assert_eq!(
        only(
            "write to dan.johnson+x@mail.example.co.uk, thanks",
            EntityType::Email
        ),
        ["dan.johnson+x@mail.example.co.uk"]
    );
    assert!(only("install left-pad@1.3.0 and @types/node", EntityType::Email).is_empty());
    assert!(only("ssh user@localhost", EntityType::Email).is_empty());
}

#[test]
fn phones_in_text() {
    assert_eq!(
        only(
            "call me at +44 20 7946 0958 or (415) 555-0132.",
            EntityType::Phone
        ),
        ["+44 20 7946 0958", "(415) 555-0132"]
    );
    assert_eq!(
        only("my mobile: 0412 345 678", EntityType::Phone),
        ["0412 345 678"]
    );
    for negative in [
        "released 2024-03-15 as 1.14.2",
        "order number 415-555-0132 shipped",
        "invoice #4155550132",
        "it costs $1 234 567",
        "build 20240315.1 of v2.3.4",
        "commit 4f2a9c1 on 15.03.2024 at 10:30",
        "population 8 336 817",
    ] {
        assert!(only(negative, EntityType::Phone).is_empty(), "{negative}");
    }
}

#[test]
fn phones_in_national_formats_with_extensions_and_cues_in_other_languages() {
    for (text, phone) in [
        ("call me at 415  555-0132 later", "415  555-0132"),
        ("Ruf an: 089 / 123 456 78.", "089 / 123 456 78"),
        ("Telefon 030/12345678 ab 9 Uhr", "030/12345678"),
        ("Appelez le 01.23.45.67.89 svp", "01.23.45.67.89"),
        ("Llame al 91 123 45 67 por favor", "91 123 45 67"),
        ("mi móvil es 612 34 56 78", "612 34 56 78"),
        (
            "call +1 415 555 0132 x13503 today",
            "+1 415 555 0132 x13503",
        ),
        (
            "call (415) 555-0132 ext. 12 today",
            "(415) 555-0132 ext. 12",
        ),
        (
            "office +44 20 7946 0958, extension 4411",
            "+44 20 7946 0958, extension 4411",
        ),
        ("call me at +49 (0) 30 1234567", "+49 (0) 30 1234567"),
        ("call me at 540.717.0011", "540.717.0011"),
        // Extensions written right after the number, and bare national numbers.
        ("call 237-573-8241x10110 now", "237-573-8241x10110"),
        ("on (948)846-9845x07059.", "(948)846-9845x07059"),
        ("the driver tried 01514960173 twice", "01514960173"),
        (
            "a appelé du +33 (0)2 32 72 85 14 au sujet",
            "+33 (0)2 32 72 85 14",
        ),
    ] {
        assert_eq!(only(text, EntityType::Phone), [phone], "{text}");
    }
    for negative in [
        "released on 12/05/2024 after review",
        "pages 1 / 2 / 3 of 2024 / 2025",
        "ticket 12345678 / 4 is open",
        "build 2024.05.17 ok, port 8080",
        "ratio 3/4 of 1234567 rows",
        "see /var/log/0123456789/app.log",
    ] {
        assert!(only(negative, EntityType::Phone).is_empty(), "{negative}");
    }
}

#[test]
fn cards_ibans_ssns() {
    assert_eq!(
        only("card 4111-1111-1111-1111 exp 12/27", EntityType::CreditCard),
        ["4111-1111-1111-1111"]
    );
    assert!(only("order 4111 1111 1111 1112", EntityType::CreditCard).is_empty());
    assert_eq!(
        only("IBAN DE89 3704 0044 0532 0130 00 please", EntityType::Iban),
        ["DE89 3704 0044 0532 0130 00"]
    );
    assert_eq!(
        only("to GB82WEST12345698765432 TODAY", EntityType::Iban),
        ["GB82WEST12345698765432"]
    );
    assert!(only("DE89 3704 0044 0532 0130 01", EntityType::Iban).is_empty());
    assert_eq!(only("SSN 123-45-6789", EntityType::Ssn), ["123-45-6789"]);
    assert_eq!(only("my ssn is 123456789", EntityType::Ssn), ["123456789"]);
    assert!(only("part 000-12-3456 and 666-12-3456", EntityType::Ssn).is_empty());
}

#[test]
fn ip_addresses() {
    assert_eq!(
        only(
            "from 192.168.1.20 and 2001:db8::8a2e:370:7334.",
            EntityType::IpAddress
        ),
        ["192.168.1.20", "2001:db8::8a2e:370:7334"]
    );
    for negative in [
        "v1.2.3.4",
        "oid 1.3.6.1.4.1",
        "at 12:30:45",
        "std::vector",
        "version 10.0.0.1",
    ] {
        assert!(
            only(negative, EntityType::IpAddress).is_empty(),
            "{negative}"
        );
    }
}

#[test]
fn secrets_and_credential_urls() {
    let cases = [
        ("key AKIAIOSFODNN7EXAMPLE ok", "AKIAIOSFODNN7EXAMPLE"),
        (
            "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        ),
        (
            "OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t",
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t",
        ),
        (
            "slack xoxb-1234567890-abcdefghij",
            "xoxb-1234567890-abcdefghij",
        ),
        (
            "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        ),
        ("db_password: hunter2!", "hunter2!"),
        ("my password is Tr0ub4dor&3", "Tr0ub4dor&3"),
    ];
    for (text, secret) in cases {
        assert_eq!(only(text, EntityType::Secret), [secret], "{text}");
    }
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    assert_eq!(only(&format!("Bearer {jwt}"), EntityType::Secret), [jwt]);
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
    assert_eq!(only(&format!("here:\n{pem}\n"), EntityType::Secret), [pem]);
    for negative in [
        "the token is expired",
        "max_tokens: 4096",
        "set password to <your-password>",
        "git sha 4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39",
        "request id 550e8400-e29b-41d4-a716-446655440000",
    ] {
        assert!(only(negative, EntityType::Secret).is_empty(), "{negative}");
    }
    assert_eq!(
        only(
            "DATABASE_URL=postgres://app:s3cr3t@db.internal:5432/app",
            EntityType::UrlCredentials
        ),
        ["postgres://app:s3cr3t@db.internal:5432/app"]
    );
}

/// `assigned_secrets` with the capture engine for every match.
fn assigned_secrets_by_captures(text: &str, found: &mut Vec<Span>) {
    let mut locations = ASSIGNED_SECRET.capture_locations();
    let mut at = 0;
    while ASSIGNED_SECRET
        .captures_read_at(&mut locations, text, at)
        .is_some()
    {
        let (start, end) = locations.get(1).expect("group 1 always takes part");
        at = push_secret_value(text, start, end, found);
    }
}

/// The pattern detectors as they ran before the cues (and before secrets' values were
/// read without the capture engine), on digit counts alone.
fn detect_patterns_without_cues(text: &str, found: &mut Vec<Span>) {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if text.contains('@') {
        push_all(&EMAIL, text, EntityType::Email, found);
        if text.contains("://") {
            for m in URL_CREDENTIALS.find_iter(text) {
                let end = m.start() + trim_trailing_punct(m.as_str()).len();
                found.push(span(m.start(), end, EntityType::UrlCredentials));
            }
        }
    }
    push_all(&TOKENS, text, EntityType::Secret, found);
    assigned_secrets_by_captures(text, found);
    if digits == 0 {
        return;
    }
    if digits >= 13 {
        cards(text, found);
    }
    if digits >= 10 {
        ibans(text, found);
    }
    if digits >= 9 {
        ssns(text, found);
    }
    if digits >= 7 {
        phones(text, &(0..text.len()), found);
    }
    if digits >= 4 {
        ipv4s(text, found);
        if text.contains(':') {
            ipv6s(text, found);
        }
    }
    for r in [
        &*ADDRESS_EN,
        &*ADDRESS_DE,
        &*ADDRESS_FR,
        &*ADDRESS_EN_MORE,
        &*ADDRESS_SOUTH,
        &*ADDRESS_UK,
        &*PO_BOX,
    ] {
        for m in r.find_iter(text) {
            let end = m.start() + m.as_str().trim_end_matches([',', ' ']).len();
            found.push(span(m.start(), end, EntityType::Address));
        }
    }
}

/// A pattern is skipped where its cue is absent, so each cue must be a necessary
/// condition of what its pattern finds: on a generated corpus and on edge cases, the
/// detectors find the same with cues as without.
#[test]
fn cues_skip_only_patterns_that_find_nothing() {
    let edge_cases = [
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "x=AIzaSyA1234567890abcdefghijklmnopqrstu",
        "npm_abcdefghijklmnopqrstuvwxyz0123456789 hf_abcdefghijklmnopqrstuvwxyz01234",
        "whsec_abcdefghijklmnopqrstuvwxyz glpat-abcdefghijklmnopqrst",
        "5sk_live_abcdefghijklmnop xoxp-1234567890-abc",
        "MyApiKey: Zx9!kLm2pQ, the CREDENTIALS were 9f8e7d6c5b4a",
        "password =abc123x, API_KEY=sk:ab=cd12x, token: 'abc=def123', secret => hunter22",
        "password is now x=y:z123, pwd:=abcdef1, passwd==Zq9x8w7, token=>Zq9x8w7v",
        "db_password: \"p@ss:w0rd=1\"; my secret is  Zq9x8w7v\u{a0}Zq9x8w7v, Token\u{2003}Zq9x8w7v",
        "221B Baker St5 and 10 Main Street_x, 3 High St. 4",
        "Goethestr. 5, Goethe-weg 5, Unter den Linden 77, An der Alster 5",
        "4 bis, place Bellecour",
        "P.O. Box 123, p o box 9",
        "Maßweg 5, 12 allée des Fleurs, ſecret=Zx9kLm2pQ, api_\u{212A}ey=Zx9kLm2pQ",
        "call +44 (20) 7946-0958 or 4111 1111 1111 1111, ssn 123 45 6789, DE89 3704 0044",
        "IBAN DE89370400440532013000, card 4111-1111-1111-1111 and 378282246310005",
        "numbers 12 345 678 and 1.2.3 and 2024-03-15 and (415) 555-0132",
        "٤١٥ ٥٥٥ ٠١٣٢ and 415 555 0132 and ۱۲۳-۴۵-۶۷۸۹",
        "SSN: 123-45-6789; Social Security Number 123 45 6789; soc. sec. 123456789",
        "SOC SEC#: 078 05 1120, my SsN is 219099999, ref A123-45-6789",
        "order 123456789 and 12-345-6789 and 123-456-789 ship 2024-03-15-0001",
    ];
    let corpus = crate::bench::pii_eval::generate(7, 1500);
    let texts = corpus
        .iter()
        .flat_map(|c| c.messages.iter().map(|m| m.text.as_str()))
        .chain(edge_cases);
    for text in texts {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        detect_patterns(text, &mut with);
        detect_patterns_without_cues(text, &mut without);
        assert_eq!(with, without, "{text:?}");
    }
}

#[test]
fn street_addresses() {
    for (text, addr) in [
        (
            "ship it to 1600 Pennsylvania Ave NW, Washington, DC 20500 asap",
            "1600 Pennsylvania Ave NW, Washington, DC 20500",
        ),
        (
            "I live at 221B Baker Street, London NW1 6XE.",
            "221B Baker Street, London NW1 6XE",
        ),
        (
            "Adresse: Hauptstraße 5, 10115 Berlin",
            "Hauptstraße 5, 10115 Berlin",
        ),
        (
            "au 12 rue de la Paix, 75002 Paris",
            "12 rue de la Paix, 75002 Paris",
        ),
        (
            "chez 5 avenue Victor Hugo, 31000 Toulouse.",
            "5 avenue Victor Hugo, 31000 Toulouse",
        ),
    ] {
        assert_eq!(only(text, EntityType::Address), [addr], "{text}");
    }
    assert!(only("we waited 20 minutes on the road", EntityType::Address).is_empty());
}

#[test]
fn british_german_and_spanish_addresses_as_generators_write_them() {
    for (text, addr) in [
        (
            "Delivery for Acme, 6 Kayleigh coves, North Joseph, CO20 7LN, attention Sheila.",
            "6 Kayleigh coves, North Joseph, CO20 7LN",
        ),
        (
            "ship to Flat 44o, Nicholson crescent, Scottborough, JE3V 0WB please",
            "Flat 44o, Nicholson crescent, Scottborough, JE3V 0WB",
        ),
        (
            "Neue Adresse: Damaris-Döring-Allee 4546, 41931 Mühldorf am Inn.",
            "Damaris-Döring-Allee 4546, 41931 Mühldorf am Inn",
        ),
        (
            "an Hans-Josef-Mentzel-Ring 22/65, 61045 Wertingen bitte",
            "Hans-Josef-Mentzel-Ring 22/65, 61045 Wertingen",
        ),
        (
            "envíen a Pasadizo de Irene Iglesia 400 Piso 8, Palencia, 09277 por favor",
            "Pasadizo de Irene Iglesia 400 Piso 8, Palencia, 09277",
        ),
    ] {
        assert_eq!(only(text, EntityType::Address), [addr], "{text}");
    }
    for text in [
        "we shipped 3 units, 2 returned, AB1 2CD was the batch",
        "Released 2 days ago, Tuesday, v1 2.3 notes",
        "Order 12 Blue widgets, London, sent",
    ] {
        assert!(only(text, EntityType::Address).is_empty(), "{text}");
    }
}

#[test]
fn addresses_with_more_street_types_and_southern_european_streets() {
    for (text, addr) in [
        (
            "Ship it to 742 Evergreen Keys please.",
            "742 Evergreen Keys",
        ),
        (
            "Ship it to 55 Ocean Fort, Tampa please.",
            "55 Ocean Fort, Tampa",
        ),
        ("Ship it to 9 Willow Plain please.", "9 Willow Plain"),
        (
            "Ship it to 8 Oak Crossing Apt 4, Dayton, OH 45402 today",
            "8 Oak Crossing Apt 4, Dayton, OH 45402",
        ),
        (
            "Envíelo a Calle Mayor 5, 28013 Madrid por favor.",
            "Calle Mayor 5, 28013 Madrid",
        ),
        (
            "Avenida de la Constitución 21, 41001 Sevilla",
            "Avenida de la Constitución 21, 41001 Sevilla",
        ),
        (
            "Spedire a Via Roma 10, 00184 Roma.",
            "Via Roma 10, 00184 Roma",
        ),
    ] {
        assert_eq!(only(text, EntityType::Address), [addr], "{text}");
    }
    for negative in [
        "we ran 3 tests in the Park and 2 more in the lab",
        "the State of the Union 2024 address",
        "section 3 Key points",
        "the via 5 route is faster",
        "Plaza 5 stars",
    ] {
        assert!(only(negative, EntityType::Address).is_empty(), "{negative}");
    }
}

#[test]
fn the_company_line_of_a_signature_block() {
    for (text, org) in [
        (
            "Mit freundlichen Grüßen\nHannah Krause B.Sc.\nHarloff\nTel. 0832315108",
            "Harloff",
        ),
        (
            "Thanks,\nDan Johnson\nBlue Harbour Trading\n+1 415 555 0132",
            "Blue Harbour Trading",
        ),
        ("Cordialement,\nSuzanne Sauvage\nLecoq\n", "Lecoq"),
    ] {
        assert_eq!(only(text, EntityType::Organization), [org], "{text}");
    }
    for text in [
        // No person on the line after the sign-off, a sentence, everyday words, a phone.
        "Thanks,\nthe team\nAcme Widgets\n",
        "Thanks,\nDan Johnson\nSee you on Monday.\n",
        "Thanks,\nDan Johnson\nSent from my phone\n",
        "Thanks,\nDan Johnson\n+1 415 555 0132\n",
    ] {
        assert!(only(text, EntityType::Organization).is_empty(), "{text}");
    }
}

#[test]
fn a_long_text_is_searched_paragraph_by_paragraph_with_the_same_findings() {
    // Conversations of the bench corpus, a message a line and a blank line after each, as
    // a day of logs reaches `redact --session`.
    let corpus = crate::bench::pii_eval::generate(5, 400);
    let mut text = String::new();
    let mut expected = Vec::new();
    for c in &corpus {
        let paragraph: String = c.messages.iter().map(|m| format!("{}\n", m.text)).collect();
        let at = text.len();
        expected.extend(detect(&paragraph).into_iter().map(|s| Span {
            start: s.start + at,
            end: s.end + at,
            entity: s.entity,
        }));
        text.push_str(&paragraph);
        text.push('\n');
    }
    assert!(text.len() > PARAGRAPHS_FROM * 4);
    let found = detect(&text);
    assert!(!found.is_empty());
    assert_eq!(found, expected);
}

#[test]
fn a_pem_block_with_a_blank_line_stays_whole_in_a_long_text() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
               DEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\nMIIEowIBAAKCAQEA\n\
               -----END RSA PRIVATE KEY-----";
    let filler = "Nothing to see in this line, the deploy went fine.\n\n".repeat(400);
    let text = format!("{filler}{key}\n\n{filler}");
    assert!(text.len() > PARAGRAPHS_FROM);
    let secrets: Vec<&str> = detect(&text)
        .iter()
        .filter(|s| s.entity == EntityType::Secret)
        .map(|s| &text[s.start..s.end])
        .collect();
    assert_eq!(secrets, [key]);
}
