use super::*;

fn people(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    detect_people_and_orgs(text, &mut found);
    found
        .iter()
        .filter(|s| s.entity == EntityType::Person)
        .map(|s| &text[s.start..s.end])
        .collect()
}

fn orgs_in(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    detect_people_and_orgs(text, &mut found);
    found
        .iter()
        .filter(|s| s.entity == EntityType::Organization)
        .map(|s| &text[s.start..s.end])
        .collect()
}

#[test]
fn gazetteer_names_capitalised_or_not() {
    assert_eq!(people("I talked to Dan Johnson yesterday"), ["Dan Johnson"]);
    assert_eq!(people("sarah said the build is green"), Vec::<&str>::new());
    assert_eq!(people("ping dan johnson about it"), ["dan johnson"]);
    assert_eq!(people("Priya's laptop broke"), ["Priya"]);
    assert_eq!(people("Anna-Lena O'Brien called"), ["Anna-Lena O'Brien"]);
}

#[test]
fn context_finds_names_the_gazetteer_lacks() {
    assert_eq!(
        people("hi, my name is zephyrine and I need help"),
        ["zephyrine"]
    );
    assert_eq!(
        people("Dear Xiomara,\nthe invoice is attached"),
        ["Xiomara"]
    );
    assert_eq!(people("Best regards,\nOlwethu Dube"), ["Olwethu Dube"]);
    assert_eq!(people("my colleague Thandeka will join"), ["Thandeka"]);
    assert_eq!(people("please ask Mr. Okoro about it"), ["Okoro"]);
    assert_eq!(people("I'm dan, nice to meet you"), ["dan"]);
    assert_eq!(people("Zephyrine Johnson signed it"), ["Zephyrine Johnson"]);
}

#[test]
fn common_words_that_are_names_need_evidence() {
    for negative in [
        "Will you send the report?",
        "We ship in May.",
        "Mark the ticket as done",
        "I hope you can help",
        "thanks for the help",
        "hi there, the build broke",
        "I'm fine, thanks",
        "Thanks, noted.",
        "thanks, understood",
        "Hi again, the build broke",
        "my name is not important",
        "We use Python with Docker",
    ] {
        assert!(
            people(negative).is_empty(),
            "{negative}: {:?}",
            people(negative)
        );
    }
    assert_eq!(people("Will Smith called"), ["Will Smith"]);
    assert_eq!(people("my name is Will"), ["Will"]);
}

#[test]
fn organisations_by_suffix_and_context() {
    assert_eq!(
        orgs_in("a contract with Northwind Traders Ltd. last year"),
        ["Northwind Traders Ltd"]
    );
    assert_eq!(orgs_in("Globex GmbH and Initech"), ["Globex GmbH"]);
    assert_eq!(orgs_in("I work at Initech now"), ["Initech"]);
    assert_eq!(orgs_in("we bought acme corp"), ["acme corp"]);
    assert!(orgs_in("I work at the bank").is_empty());
}

#[test]
fn particles_titles_and_degrees_of_other_languages() {
    assert_eq!(
        people("Please ask Jan van der Berg about the deploy."),
        ["Jan van der Berg"]
    );
    assert_eq!(
        people("I spoke with María de la Cruz yesterday."),
        ["María de la Cruz"]
    );
    assert_eq!(people("Contact Herr Müller before noon."), ["Müller"]);
    assert_eq!(people("Mme Dupont sent the invoice."), ["Dupont"]);
    assert_eq!(
        people("Lucas Moreau B.Sc. joined the team."),
        ["Lucas Moreau"]
    );
    assert_eq!(people("Thanks, Pierre du Pont"), ["Pierre du Pont"]);
    // A particle alone is no name, and a common word after one is none either.
    assert!(people("the van der is broken and de la plan").is_empty());
}

#[test]
fn organisations_joined_by_and_before_a_legal_form() {
    assert_eq!(
        orgs_in("Hayes and Armstrong LLC filed the claim."),
        ["Hayes and Armstrong LLC"]
    );
    assert!(orgs_in("Jekyll and Hyde is a novel.").is_empty());
    assert!(people("Jekyll and Hyde is a novel.").is_empty());
}

#[test]
fn firms_named_after_their_partners() {
    for (text, org) in [
        (
            "Invoice for Young, Harris and Kelly is late.",
            "Young, Harris and Kelly",
        ),
        ("Baker, Lee & Ortiz signed.", "Baker, Lee & Ortiz"),
        ("Delivery for Morton-Ryan, attention Sheila.", "Morton-Ryan"),
        ("Renner e.V. hat bezahlt.", "Renner e.V"),
        ("Lindau Faust GbR zahlt.", "Lindau Faust GbR"),
    ] {
        assert_eq!(orgs_in(text), [org], "{text}");
    }
    // A double-barrelled surname after a given name or a title is a person's.
    assert!(orgs_in("Sheila Ward-Stevens called.").is_empty());
    assert!(orgs_in("Ms Ward-Stevens called.").is_empty());
    // Places and everyday words in a list are no firm.
    assert!(orgs_in("We fly to Paris, Berlin and Rome.").is_empty());
    assert!(orgs_in("Apples, Pears and Plums are in stock.").is_empty());
}

#[test]
fn a_ticket_key_that_spells_a_legal_form_is_no_organisation() {
    for text in [
        "rolled back, siehe INC-2291.",
        "se revirtió, ver INC-2291.",
        "annulé, voir INC-2291.",
        "see Acme INC-17 for details",
    ] {
        assert!(orgs_in(text).is_empty(), "{text}: {:?}", orgs_in(text));
    }
    assert_eq!(orgs_in("Globex Inc. shipped it."), ["Globex Inc"]);
}

#[test]
fn organisations_of_family_businesses_and_dotted_legal_forms() {
    assert_eq!(
        orgs_in("Carter and Sons delivered the parts."),
        ["Carter and Sons"]
    );
    assert_eq!(
        orgs_in("Transportes García S.L. invoiced us."),
        ["Transportes García S.L"]
    );
    // "Consulting" ends an organisation too; the overlap resolver keeps the longer one.
    assert!(orgs_in("Iberia Consulting S.A. paid.").contains(&"Iberia Consulting S.A"));
    assert_eq!(
        orgs_in("Baker, Lee and Ortiz LLP filed it."),
        ["Baker, Lee and Ortiz LLP"]
    );
    assert!(orgs_in("my two sons and the S.A. rules").is_empty());
    assert!(orgs_in("Her Sons arrived.").is_empty());
}

#[test]
fn lower_case_names_after_a_verb_that_takes_a_person() {
    assert_eq!(
        people("Ask claudius bruder for access."),
        ["claudius bruder"]
    );
    assert_eq!(
        people("Tell maximiano del calvet the build passed."),
        ["maximiano del calvet"]
    );
    for negative in [
        "ask kubectl for the logs",
        "ping the grafana dashboards",
        "tell everyone the build passed",
        "ask for access to the repo",
    ] {
        assert!(people(negative).is_empty(), "{negative}");
    }
}

#[test]
fn people_after_german_french_and_spanish_cues() {
    for (text, name) in [
        ("Kunde Senol Rädel sagt, die Rechnung fehlt.", "Senol Rädel"),
        ("Kunde Sandy Hübel sagt hallo.", "Sandy Hübel"),
        (
            "Bitte rufen Sie unseren Kunden an, der Kunde Adolf Bonbach wartet.",
            "Adolf Bonbach",
        ),
        ("Le client Thibaut Hoareau dit bonjour.", "Thibaut Hoareau"),
        ("El cliente Bautista Jordán dice hola.", "Bautista Jordán"),
        (
            "Customer Senol Rädel says the invoice is missing.",
            "Senol Rädel",
        ),
        (
            "Refund to the account, account holder Nurten Hein.",
            "Nurten Hein",
        ),
        ("Hallo, hier ist Senol Rädel von Acme.", "Senol Rädel"),
        (
            "Hola, soy Teresita Solana Sans de Acme.",
            "Teresita Solana Sans",
        ),
        ("Bonjour, ici Suzanne Sauvage de Acme.", "Suzanne Sauvage"),
        (
            "¿Puede llamar a Hernando Porta Baena al 876?",
            "Hernando Porta Baena",
        ),
        ("relance Thibaut s'il n'y a pas de réponse", "Thibaut"),
        ("frag mal Gino, ob es klappt", "Gino"),
        (
            "Bitte an Ing. Philomena Weimer weiterleiten.",
            "Philomena Weimer",
        ),
    ] {
        assert_eq!(people(text), [name], "{text}");
    }
    // The cue word itself is never part of the name, and no cue takes everyday words.
    for text in [
        "Kunde sagt hallo.",
        "Customer Support is closed today.",
        "Le client veut un remboursement.",
        "Hola, soy nuevo aquí.",
        "Voy a Madrid mañana.",
        "Pregunta a soporte si hay novedades.",
        "This is a Test of the system.",
    ] {
        assert!(people(text).is_empty(), "{text}: {:?}", people(text));
    }
}
