//! The substitution table: each form with the variable set, empty and unset.

use std::collections::BTreeMap;

use super::{SubstError, substitute};

fn env() -> BTreeMap<String, String> {
    [("SET", "value"), ("EMPTY", ""), ("TAG", "1.25"), ("NESTED", "${SET}")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn substitutions() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("plain text", "plain text", &[]),
        ("$SET", "value", &[]),
        ("${SET}", "value", &[]),
        ("nginx:${TAG}-alpine", "nginx:1.25-alpine", &[]),
        ("$SET/$SET", "value/value", &[]),
        ("$SET-suffix", "value-suffix", &[]),
        ("${UNSET}", "", &["UNSET"]),
        ("$UNSET", "", &["UNSET"]),
        ("${EMPTY}", "", &[]),
        // `:-` replaces unset and empty, `-` only unset.
        ("${SET:-d}", "value", &[]),
        ("${EMPTY:-d}", "d", &[]),
        ("${UNSET:-d}", "d", &[]),
        ("${SET-d}", "value", &[]),
        ("${EMPTY-d}", "", &[]),
        ("${UNSET-d}", "d", &[]),
        ("${UNSET:-}", "", &[]),
        ("${UNSET:-a b:c}", "a b:c", &[]),
        // `:+` gives the alternative when set and not empty, `+` when set.
        ("${SET:+alt}", "alt", &[]),
        ("${EMPTY:+alt}", "", &[]),
        ("${UNSET:+alt}", "", &[]),
        ("${EMPTY+alt}", "alt", &[]),
        ("${UNSET+alt}", "", &[]),
        // `?` passes a set value through.
        ("${SET:?needed}", "value", &[]),
        ("${EMPTY?needed}", "", &[]),
        // Nested defaults.
        ("${UNSET:-${SET}}", "value", &[]),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep", &[]),
        ("${UNSET:-${ALSO_UNSET}}", "", &["ALSO_UNSET"]),
        // `$$` escapes, and values are not substituted again.
        ("$$SET", "$SET", &[]),
        ("$${SET}", "${SET}", &[]),
        ("a $$ b", "a $ b", &[]),
        ("${NESTED}", "${SET}", &[]),
        ("${UNSET:-$$}", "$", &[]),
    ];
    for (text, want, want_unset) in cases {
        let mut unset = Vec::new();
        let got = substitute(text, &env(), &mut unset);
        assert_eq!(got.as_deref(), Ok(*want), "{text}");
        assert_eq!(unset, *want_unset, "unset variables of {text}");
    }
}

#[test]
fn errors() {
    let required =
        |name: &str, message: &str| SubstError::Required { name: name.to_owned(), message: message.to_owned() };
    let cases = [
        ("${UNSET:?set UNSET first}", required("UNSET", "set UNSET first")),
        ("${EMPTY:?is empty}", required("EMPTY", "is empty")),
        ("${UNSET?}", required("UNSET", "")),
        ("${UNSET?need ${SET}}", required("UNSET", "need value")),
        ("$", SubstError::Invalid),
        ("cost: 5$", SubstError::Invalid),
        ("$1", SubstError::Invalid),
        ("echo $ HOME", SubstError::Invalid),
        ("${", SubstError::Invalid),
        ("${SET", SubstError::Invalid),
        ("${}", SubstError::Invalid),
        ("${1A}", SubstError::Invalid),
        ("${SET:}", SubstError::Invalid),
        ("${SET:x}", SubstError::Invalid),
        ("${SET!}", SubstError::Invalid),
        ("${SET.x}", SubstError::Invalid),
    ];
    for (text, want) in cases {
        assert_eq!(substitute(text, &env(), &mut Vec::new()), Err(want), "{text}");
    }
}
