use super::*;

#[test]
fn letters_count_like_spreadsheet_columns() {
    assert_eq!(letters(0), "A");
    assert_eq!(letters(25), "Z");
    assert_eq!(letters(26), "AA");
    for n in [0, 5, 25, 26, 27, 700] {
        assert_eq!(letters_index(&letters(n)), Some(n));
    }
}

#[test]
fn aliases_of_one_person_share_a_pseudonym() {
    let mut r = Redactor::new();
    let (a, _) = r.redact("Hi, I'm Dan Johnson from Globex GmbH.");
    assert_eq!(a, "Hi, I'm USER_A from ORG_ID_A.");
    let (b, _) = r.redact("Dan will mail you from dan.johnson@globex.example, ask dan.");
    assert_eq!(b, "USER_A will mail you from USER_A_EMAIL, ask USER_A.");
    let (c, report) = r.redact("Sarah Miller and Dan met at Globex.");
    assert_eq!(c, "USER_B and USER_A met at ORG_ID_A.");
    assert_eq!(report.replaced[&EntityType::Person], 2);
}

#[test]
fn an_email_can_introduce_the_person() {
    let mut r = Redactor::new();
    let (a, _) = r.redact("reach me at maria.garcia@example.com");
    assert_eq!(a, "reach me at USER_A_EMAIL");
    let (b, _) = r.redact("maria said yes");
    assert_eq!(b, "USER_A said yes");
}

#[test]
fn known_values_are_replaced_where_detection_alone_misses_them() {
    let mut r = Redactor::new();
    let (_, _) = r.redact("my name is Zephyrine");
    let (b, _) = r.redact("zephyrine again");
    assert_eq!(b, "USER_A again");
    let (_, _) = r.redact("call me on 415 555 0132");
    let (c, _) = r.redact("ref 415 555 0132, order 415 555 0132");
    assert_eq!(c, "ref PHONE_1, order PHONE_1");
}

#[test]
fn a_name_learned_in_a_text_is_replaced_later_in_the_same_text() {
    let mut r = Redactor::new();
    let (a, _) = r.redact("Dan Johnson called.\ndan said he will ship v1.2 on 2024-03-15");
    assert_eq!(
        a,
        "USER_A called.\nUSER_A said he will ship v1.2 on 2024-03-15"
    );
}

#[test]
fn a_text_that_teaches_new_forms_keeps_the_known_ones() {
    // The second search of a text looks only at the forms it taught; what the forms
    // known before found must still be replaced.
    let mut r = Redactor::new();
    r.redact("Dan Johnson, +1 415 555 0132");
    let (a, _) = r.redact("dan, 415 555 0132: meet Priya Patel; priya and dan agree");
    assert_eq!(a, "USER_A, PHONE_1: meet USER_B; USER_B and USER_A agree");
    // Past the automaton's threshold every form is searched again.
    let mut r = Redactor::new();
    for i in 0..50 {
        r.redact(&format!("call me on +1 415 555 {:04}", 1000 + i));
    }
    let (b, _) = r.redact("+1 415 555 1000 and Dan Johnson; dan and 415 555 1049");
    assert_eq!(b, "PHONE_1 and USER_A; USER_A and PHONE_50");
}

#[test]
fn common_word_names_stay_words_after_they_are_known() {
    let mut r = Redactor::new();
    let (a, _) = r.redact("Will Smith called");
    assert_eq!(a, "USER_A called");
    let (b, _) = r.redact("Will said he will call");
    assert_eq!(b, "USER_A said he will call");
}

#[test]
fn session_continues_from_mappings_and_reveal_round_trips() {
    let mut r = Redactor::new();
    let text = "Dan Johnson (dan.johnson@example.com, +1 415 555 0132) works at Initech.";
    let (red, _) = r.redact(text);
    let stored = r.take_new_mappings();
    assert!(stored.iter().all(|m| !m.value.is_empty()));
    let (back, unknown) = reveal(&red, &stored);
    assert_eq!(back, text);
    assert!(unknown.is_empty());

    let mut again = Redactor::from_mappings(stored);
    let (red2, _) = again.redact("Dan again, from Initech; new: Priya Patel");
    assert_eq!(red2, "USER_A again, from ORG_ID_A; new: USER_B");
    let (_, unknown) = reveal("USER_Z and EMAIL_9", &again.mappings());
    assert_eq!(unknown, ["USER_Z", "EMAIL_9"]);
}

#[test]
fn redacting_twice_changes_nothing() {
    let mut r = Redactor::new();
    let (once, _) = r.redact("Dan Johnson, dan@x.example, 4111 1111 1111 1111");
    let (twice, report) = r.redact(&once);
    assert_eq!(once, twice);
    assert_eq!(report.total(), 0);
}

/// A session that has learned many values finds them through the token index as the
/// form-by-form search does for a few: in any case for names, as written for names that are
/// common words, and whole words only.
#[test]
fn a_session_of_many_values_finds_them_all_through_the_index() {
    let mut r = Redactor::new();
    r.redact("Hi, I'm Dan Johnson, and Will Bauer is here too.");
    let first = ["Maria", "Sarah", "Hiroshi", "Olga", "Pedro", "Amara"];
    let last = [
        "Khan",
        "Miller",
        "Garcia",
        "Novak",
        "Okafor",
        "Lindqvist",
        "Rossi",
    ];
    let mut n = 0;
    'outer: for f in first {
        for l in last {
            r.redact(&format!(
                "Please call {f} {l} at {f}.{l}{n}@example.com tomorrow."
            ));
            n += 1;
            if n == 40 {
                break 'outer;
            }
        }
    }
    assert!(r.matcher.indexed(), "{} forms", r.matcher.folded.len());
    let (text, _) = r.redact("so DAN JOHNSON and dan johnson, not Danjohnson; will Will come?");
    assert_eq!(
        text, "so USER_A and USER_A, not Danjohnson; will USER_B come?",
        "a name in any case, a name that is a word only as written, whole words only"
    );
    // A form learned in a text is found again later in that same text.
    let (text, _) = r.redact("Please call Amara Rossi now; amara rossi knows.");
    assert!(!text.to_lowercase().contains("rossi"), "{text}");
}

/// Thousands of values in one session: the first is still found, and a long text with
/// thousands of spans is resolved as its pieces are.
#[test]
fn a_long_session_keeps_finding_its_first_values() {
    let mut r = Redactor::new();
    r.redact("Hi, I'm Maria Garcia, write to maria.garcia@example.org.");
    let mut long = String::new();
    for i in 0..3000 {
        long.push_str(&format!(
            "ticket {i}: mail user{i}@example.net or call 415 555 {:04}\n",
            i
        ));
    }
    let (out, report) = r.redact(&long);
    assert_eq!(report.replaced[&EntityType::Email], 3000);
    assert!(!out.contains("@example.net"));
    let (text, _) = r.redact("maria and Garcia wrote from maria.garcia@example.org");
    assert_eq!(text, "USER_A and USER_A wrote from USER_A_EMAIL");
}

/// The example: once "Sarah Port" is known, "port 8080" is still a port; names that
/// are no everyday words, and known given and family names, still match in any case.
#[test]
fn a_name_word_that_is_an_everyday_word_is_replaced_only_where_written_as_a_name() {
    let mut r = Redactor::new();
    let (a, _) = r.redact("Please call Sarah Port tomorrow.");
    assert_eq!(a, "Please call USER_A tomorrow.");
    let (b, _) = r.redact("Kubernetes and port 8080 are fine; ask sarah about Port.");
    assert_eq!(
        b,
        "Kubernetes and port 8080 are fine; ask USER_A about USER_A."
    );
    let (c, _) = r.redact("Hi, I'm Dan Johnson.");
    assert_eq!(c, "Hi, I'm USER_B.");
    let (d, _) = r.redact("ask johnson, or dan");
    assert_eq!(d, "ask USER_B, or USER_B");
}

#[test]
fn a_learned_everyday_name_word_before_a_number_or_after_an_article_stays() {
    let mut r = Redactor::new();
    let (a, _) = r.redact("Please call Sarah Port tomorrow. May Chen joined today.");
    assert_eq!(a, "Please call USER_A tomorrow. USER_B joined today.");
    let (b, _) = r.redact("Port 443 is closed. The Port team will check. We met on May 3.");
    assert_eq!(
        b,
        "Port 443 is closed. The Port team will check. We met on May 3."
    );
    // Where it is written as the name, it still is the person.
    let (c, _) = r.redact("Thanks, Port. Ask May about it.");
    assert_eq!(c, "Thanks, USER_A. Ask USER_B about it.");
}
