use std::borrow::Cow;

use super::*;
use crate::model::{Detector, MaskStrategy};

const ALL: [Detector; 8] = Detector::ALL;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

/// The matched substrings of `detector` alone.
fn hits(detector: Detector, text: &str) -> Vec<&str> {
    find(&[detector], text)
        .iter()
        .map(|m| {
            m.as_str(text)
                .unwrap_or_else(|| panic!("{m:?} in {text:?}"))
        })
        .collect()
}

/// `text` is exactly one match of `detector`.
fn whole(detector: Detector, text: &str) {
    assert_eq!(hits(detector, text), [text], "{detector:?} on {text:?}");
}

fn none(detector: Detector, text: &str) {
    assert_eq!(
        hits(detector, text),
        Vec::<&str>::new(),
        "{detector:?} on {text:?}"
    );
}

// ------------------------------------------------------------------ email

#[test]
fn email_accepts() {
    for e in [
        "alice@example.com",
        "a.b-c+tag@mail.example.co.uk",
        "x_y%z@sub-domain.example.io",
        "JOHN.DOE@EXAMPLE.ORG",
    ] {
        whole(Detector::Email, e);
    }
    assert_eq!(
        hits(Detector::Email, "mail <bob@example.com>, then carol@x.org."),
        ["bob@example.com", "carol@x.org"]
    );
    // A trailing label that is not a TLD is left out.
    assert_eq!(
        hits(Detector::Email, "bob@example.com.42"),
        ["bob@example.com"]
    );
    // A leading dot is not part of the local part.
    assert_eq!(
        hits(Detector::Email, "..bob@example.com"),
        ["bob@example.com"]
    );
}

#[test]
fn email_rejects() {
    for t in [
        "alice@localhost",
        "alice@example.c",
        "alice@example.c0m",
        "@example.com",
        "alice.@example.com",
        "alice@-example.com",
        "alice@.example.com",
        "a @ b.com",
        "user@host-.com",
        "no at sign here.com",
    ] {
        none(Detector::Email, t);
    }
}

// ------------------------------------------------------------ credit card

#[test]
fn credit_card_accepts() {
    for c in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4222222222222",     // Visa, 13 digits
        "5555555555554444",  // Mastercard
        "2223003122003222",  // Mastercard 2-series
        "378282246310005",   // Amex
        "3782 822463 10005", // Amex grouping
        "6011111111111117",  // Discover
        "30569309025904",    // Diners
        "3530111333300000",  // JCB
    ] {
        whole(Detector::CreditCard, c);
    }
    assert_eq!(
        hits(Detector::CreditCard, "card: 4111 1111 1111 1111 exp 12/29"),
        ["4111 1111 1111 1111"]
    );
    // Whole groups: the card is found inside a longer separated sequence.
    assert_eq!(
        hits(Detector::CreditCard, "4111 1111 1111 1111 2024"),
        ["4111 1111 1111 1111"]
    );
    assert_eq!(
        hits(Detector::CreditCard, "99 4111-1111-1111-1111"),
        ["4111-1111-1111-1111"]
    );
    // Letters around a card do not protect it.
    assert_eq!(
        hits(Detector::CreditCard, "ref4111111111111111x"),
        ["4111111111111111"]
    );
}

#[test]
fn credit_card_rejects() {
    for t in [
        "4111111111111112", // order id failing Luhn
        "order 4111111111111112 shipped",
        "1234567812345670",     // Luhn-valid, unknown IIN
        "41111111111111110",    // 17 digits, Luhn fails
        "94111111111111111",    // the card inside a longer digit run
        "41111111111111119999", // 20 digits
        "4111  1111 1111 1111", // double separator
        "4111-1111 1111-1111",  // mixed separators
        "0.4111111111111111",   // a decimal fraction
        "411111111111",         // 12 digits
    ] {
        none(Detector::CreditCard, t);
    }
}

// -------------------------------------------------------------------- ssn

#[test]
fn ssn_accepts() {
    for s in ["078-05-1120", "078 05 1120", "078051120", "899-99-9999"] {
        whole(Detector::Ssn, s);
    }
    assert_eq!(
        hits(Detector::Ssn, "SSN:123-45-6789, alt 234567890."),
        ["123-45-6789", "234567890"]
    );
}

#[test]
fn ssn_rejects() {
    for t in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123-45 6789", // mixed separators
        "1234567890",  // 10 bare digits
        "12345678",    // 8 bare digits
        "id123456789", // bare digits inside a word
        "123456789abc",
        "9123-45-6789",  // longer digit run
        "1-123-45-6789", // longer dashed sequence
        "123-45-6789-1",
        "0.123456789",
    ] {
        none(Detector::Ssn, t);
    }
}

// ------------------------------------------------------------------- iban

#[test]
fn iban_accepts() {
    for i in [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "ES9121000418450200051332",
        "IT60X0542811101000000123456",
        "CH9300762011623852957",
        "BE68539007547034",
        "AT611904300234573201",
        "PL61109010140000071219812874",
        "SE4550000000058398257466",
        "NO9386011117947",
        "DK5000400440116243",
        "FI2112345600000785",
        "IE29AIBK93115212345678",
        "PT50000201231234567890154",
        "LU280019400644750000",
        "MT84MALT011000012345MTLCAST001S", // not in the table: 15-34 + mod-97
        "SA0380000000608010167519",
    ] {
        whole(Detector::Iban, i);
    }
    assert_eq!(
        hits(Detector::Iban, "pay to BE68 5390 0754 7034 THEN done"),
        ["BE68 5390 0754 7034"]
    );
    assert_eq!(
        hits(Detector::Iban, "iban=DE89370400440532013000;"),
        ["DE89370400440532013000"]
    );
}

#[test]
fn iban_rejects() {
    for t in [
        "DE88370400440532013000",  // wrong check digits
        "DE89370400440532013001",  // wrong check
        "DE8937040044053201300",   // DE is 22, this is 21
        "DE893704004405320130000", // too long for DE
        "XDE89370400440532013000", // glued to a letter
        "DE89370400440532013000X",
        "de89370400440532013000",     // lowercase country
        "DE89 37040044 0532 0130 00", // broken grouping
        "ZZ00123",
    ] {
        none(Detector::Iban, t);
    }
}

// ------------------------------------------------------------------ phone

#[test]
fn phone_accepts() {
    for p in [
        "+14155552671",
        "+1 415 555 2671",
        "+1 (415) 555-2671",
        "+44 20 7946 0958",
        "+49-30-1234567",
        "+33 (0)1 23 45 67 89",
        "+1.415.555.2671",
        "(415) 555-2671",
        "(415)555-2671",
        "415-555-2671",
        "415.555.2671",
        "1-800-555-0199",
    ] {
        whole(Detector::Phone, p);
    }
    assert_eq!(
        hits(Detector::Phone, "call +44 20 7946 0958."),
        ["+44 20 7946 0958"]
    );
}

#[test]
fn phone_rejects() {
    for t in [
        "2024-01-31",
        "31.01.2024",
        "2024-01-31 12:30:45",
        "12:30:45",
        "v1.2.3",
        "1.10.100",
        "10.0.3.7",
        "4155552671",        // plain 10-digit id
        "+1234567",          // 7 digits
        "+0123456789",       // no country code starts with 0
        "+1234567890123456", // 16 digits
        "x+14155552671",
        "1+4155552671", // arithmetic, not a number
        "9415-555-2671",
        "415-555-26711",
        "415-555-2671-3",
        "2.415.555.2671",
        "415-555.2671", // mixed separators
        "a415-555-2671",
    ] {
        none(Detector::Phone, t);
    }
}

// -------------------------------------------------------------- cloud key

#[test]
fn cloud_key_accepts() {
    let ghp = format!("ghp_{}", "a1B2".repeat(9));
    let pat = format!("github_pat_{}", "Ab_1".repeat(20) + "xy");
    for k in [
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
        ghp.as_str(),
        &ghp.replace("ghp_", "gho_"),
        &ghp.replace("ghp_", "ghs_"),
        pat.as_str(),
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
        "xoxp-1234567890-abcdef",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_4eC39HqLyjWDarjtT1zdp7dcEXTRA",
    ] {
        whole(Detector::CloudKey, k);
    }
    assert_eq!(
        hits(
            Detector::CloudKey,
            "aws_access_key_id=AKIAIOSFODNN7EXAMPLE\n"
        ),
        ["AKIAIOSFODNN7EXAMPLE"]
    );
}

#[test]
fn cloud_key_rejects() {
    for t in [
        "AKIAIOSFODNN7EXAMPL",   // AKIA + 15
        "AKIAIOSFODNN7EXAMPLE1", // AKIA + 17
        "AKIAIOSFODNN7EXAMPLe",  // lowercase
        "XAKIAIOSFODNN7EXAMPLE", // inside a word
        "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsH",
        "ghp_short",
        "ghx_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2",
        "github_pat_tooshort",
        "xoxb-123",
        "xoxz-123456789012-1234567890123",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "sk_live_short",
    ] {
        none(Detector::CloudKey, t);
    }
}

// -------------------------------------------------------------------- jwt

#[test]
fn jwt_accepts() {
    whole(Detector::Jwt, JWT);
    // Whitespace in the header, unsecured token with an empty signature.
    whole(Detector::Jwt, "eyAiYWxnIjogIm5vbmUiIH0.eyJzdWIiOiIxIn0.");
    let bearer = format!("Authorization: Bearer {JWT}\r\n");
    assert_eq!(hits(Detector::Jwt, &bearer), [JWT]);
    // JWE: five segments.
    let jwe = format!("{JWT}.abc.def");
    whole(Detector::Jwt, &jwe);
}

#[test]
fn jwt_rejects() {
    for t in [
        // Header is JSON but has no "alg".
        "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln",
        // Header is not a complete JSON object.
        "eyJhbGciOiJIUzI1NiI.eyJzdWIiOiIxIn0.c2ln",
        // Header is not base64url JSON at all.
        "eyzzzzzzzz.eyJzdWIiOiIxIn0.c2ln",
        "aGVsbG8gd29ybGQ.eyJzdWIiOiIxIn0.c2ln",
        // Two segments only.
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0",
        "e.g. this",
        "example.com.au",
    ] {
        none(Detector::Jwt, t);
    }
    // Inside a longer base64url word it is not a token boundary.
    none(Detector::Jwt, &format!("x{JWT}"));
}

// ------------------------------------------------------------ private key

#[test]
fn private_key_accepts() {
    let rsa =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc=\n-----END RSA PRIVATE KEY-----";
    whole(Detector::PrivateKey, rsa);
    let text = format!("key:\n{rsa}\ntrailing");
    assert_eq!(hits(Detector::PrivateKey, &text), [rsa]);
    for k in [
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOY\n-----END PGP PRIVATE KEY BLOCK-----",
    ] {
        whole(Detector::PrivateKey, k);
    }
    // Missing END, or an END of another label: masked to the end (fail closed).
    whole(
        Detector::PrivateKey,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAw... (truncated)",
    );
    whole(
        Detector::PrivateKey,
        "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\nmore",
    );
    whole(Detector::PrivateKey, "-----BEGIN RSA PRIVATE KEY");
    // Two keys, two matches.
    let two = "-----BEGIN PRIVATE KEY-----\na\n-----END PRIVATE KEY----- and -----BEGIN PRIVATE KEY-----\nb\n-----END PRIVATE KEY-----";
    assert_eq!(find(&[Detector::PrivateKey], two).len(), 2);
}

#[test]
fn private_key_rejects() {
    for t in [
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        "-----BEGIN private key-----",
        "-----END PRIVATE KEY-----",
    ] {
        none(Detector::PrivateKey, t);
    }
}

// ------------------------------------------------------ find and overlaps

#[test]
fn several_different_matches_in_order() {
    let text = format!(
        "Name: Zoë, mail zoe@example.com, card 4111-1111-1111-1111, ssn 078-05-1120, \
         IBAN DE89 3704 0044 0532 0130 00, tel +44 20 7946 0958, key AKIAIOSFODNN7EXAMPLE, \
         token {JWT} -- ok"
    );
    let found = find(&ALL, &text);
    let got: Vec<(Detector, &str)> = found
        .iter()
        .map(|m| (m.detector, m.as_str(&text).unwrap_or("?")))
        .collect();
    assert_eq!(
        got,
        [
            (Detector::Email, "zoe@example.com"),
            (Detector::CreditCard, "4111-1111-1111-1111"),
            (Detector::Ssn, "078-05-1120"),
            (Detector::Iban, "DE89 3704 0044 0532 0130 00"),
            (Detector::Phone, "+44 20 7946 0958"),
            (Detector::CloudKey, "AKIAIOSFODNN7EXAMPLE"),
            (Detector::Jwt, JWT),
        ]
    );
}

#[test]
fn overlaps_merge_and_name_the_longer_then_the_earlier_detector() {
    // A 9-digit SSN inside an E.164 number: the longer phone wins.
    let text = "+1 078051120 55";
    let found = find(&[Detector::Ssn, Detector::Phone], text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].detector, Detector::Phone);
    assert_eq!(found[0].as_str(text), Some("+1 078051120 55"));

    // Only the SSN shape matches here, whatever the order.
    let text = "078-05-1120";
    let kinds = |ds: &[Detector]| {
        find(ds, text)
            .iter()
            .map(|m| m.detector)
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&[Detector::Phone, Detector::Ssn]), [Detector::Ssn]);

    // The resolver merges overlapping spans; the longest part (then the
    // detector listed first) names the result.
    let a = Match {
        start: 0,
        end: 5,
        detector: Detector::Phone,
    };
    let b = Match {
        start: 0,
        end: 5,
        detector: Detector::Ssn,
    };
    let c = Match {
        start: 3,
        end: 9,
        detector: Detector::Email,
    };
    let d = Match {
        start: 9,
        end: 10,
        detector: Detector::Iban,
    };
    let merged = Match {
        start: 0,
        end: 9,
        detector: Detector::Email,
    };
    assert_eq!(
        resolve_overlaps(vec![(1, a), (0, b), (2, c), (3, d)]),
        [merged, d],
        "the part of `a` before `c` is covered too"
    );
    assert_eq!(resolve_overlaps(vec![(1, a), (0, b), (3, d)]), [b, d]);
    assert_eq!(resolve_overlaps(vec![(0, a), (1, b), (3, d)]), [a, d]);

    // Duplicate detectors in the list change nothing.
    assert_eq!(
        find(&[Detector::Ssn, Detector::Ssn], "078-05-1120").len(),
        1
    );
}

#[test]
fn unicode_around_matches_keeps_char_boundaries() {
    let text = "Ünïcödé→zoe@example.com←日本語4111111111111111🎉078-05-1120ß+44 20 7946 0958é";
    let found = find(&ALL, text);
    let got: Vec<&str> = found.iter().filter_map(|m| m.as_str(text)).collect();
    assert_eq!(
        got,
        [
            "zoe@example.com",
            "4111111111111111",
            "078-05-1120",
            "+44 20 7946 0958"
        ]
    );
    let masked = mask_text(&ALL, MaskStrategy::Redact, text, b"k");
    assert_eq!(
        masked.as_deref(),
        Some("Ünïcödé→[REDACTED]←日本語[REDACTED]🎉[REDACTED]ß[REDACTED]é")
    );
}

#[test]
fn never_panics_on_any_prefix_or_suffix() {
    let tricky = format!(
        "é@ü.de a@b.cc +(1) 2-3 4111 1111 1111 1111 5 ☃078-05-1120☃ DE89 3704 0044 0532 0130 00 \
         (415) 555-2671 415.555.2671 1-800-555-0199 AKIAIOSFODNN7EXAMPLE AIza ghp_ xoxb- \
         sk_live_ {JWT}. eyJ. e -----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY- \
         -----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----日本 123456789 0.4111111111111111 \
         +14155552671 ..@@..@ 🎉"
    );
    let boundaries: Vec<usize> = (0..=tricky.len())
        .filter(|&i| tricky.is_char_boundary(i))
        .collect();
    for &i in &boundaries {
        for text in [&tricky[..i], &tricky[i..]] {
            let found = find(&ALL, text);
            let mut last_end = 0;
            for m in &found {
                assert!(
                    m.start < m.end && m.start >= last_end,
                    "{found:?} in {text:?}"
                );
                assert!(m.as_str(text).is_some(), "{m:?} in {text:?}");
                last_end = m.end;
            }
            for strategy in [
                MaskStrategy::Redact,
                MaskStrategy::Partial,
                MaskStrategy::Hash,
                MaskStrategy::Null,
            ] {
                let _ = mask_text(&ALL, strategy, text, b"key");
            }
        }
    }
}

// ------------------------------------------------------------- strategies

#[test]
fn partial_keeps_the_last_four_and_separators() {
    let p = |v: &str| apply(MaskStrategy::Partial, v, b"k");
    assert_eq!(
        p("4111-1111-1111-1111").as_deref(),
        Some("****-****-****-1111")
    );
    assert_eq!(p("4111111111111111").as_deref(), Some("************1111"));
    assert_eq!(p("alice@example.com").as_deref(), Some("*****@*******.com"));
    assert_eq!(p("078-05-1120").as_deref(), Some("***-**-1120"));
    // Characters, not bytes.
    assert_eq!(p("ÜbÉr-ßtraße").as_deref(), Some("****-**raße"));
    // Four characters or fewer: all masked.
    assert_eq!(p("1234").as_deref(), Some("****"));
    assert_eq!(p("a-b").as_deref(), Some("***"));
    assert_eq!(p("").as_deref(), Some(""));
    assert_eq!(p("12345").as_deref(), Some("*2345"));
}

#[test]
fn redact_hash_and_null() {
    assert_eq!(
        apply(MaskStrategy::Redact, "anything", b"k").as_deref(),
        Some("[REDACTED]")
    );
    assert_eq!(apply(MaskStrategy::Null, "anything", b"k"), None);

    let h = |v: &str, k: &[u8]| apply(MaskStrategy::Hash, v, k).unwrap_or_default();
    // HMAC-SHA256(b"k1", "4111-1111-1111-1111"), first 12 bytes.
    assert_eq!(
        h("4111-1111-1111-1111", b"k1"),
        "h:585830b742c629943404a350"
    );
    assert_eq!(
        h("4111-1111-1111-1111", b"k1"),
        h("4111-1111-1111-1111", b"k1")
    );
    assert_ne!(
        h("4111-1111-1111-1111", b"k1"),
        h("4111-1111-1111-1111", b"k2")
    );
    assert_ne!(
        h("4111-1111-1111-1111", b"k1"),
        h("4111-1111-1111-1112", b"k1")
    );
    assert_eq!(h("x", b"k").len(), 2 + 24);
}

#[test]
fn mask_text_borrows_when_nothing_matches() {
    let text = "order 4111111111111112 on 2024-01-31, v1.2.3, id 4155552671";
    match mask_text(&ALL, MaskStrategy::Redact, text, b"k") {
        Some(Cow::Borrowed(t)) => assert!(std::ptr::eq(t, text)),
        other => panic!("{other:?}"),
    }
    // Even the null strategy keeps a value with no match.
    assert!(matches!(
        mask_text(&ALL, MaskStrategy::Null, text, b"k"),
        Some(Cow::Borrowed(_))
    ));
    assert!(matches!(
        mask_text(&[], MaskStrategy::Null, "zoe@example.com", b"k"),
        Some(Cow::Borrowed(_))
    ));
}

#[test]
fn mask_text_rewrites_every_match() {
    let text = "card 4111-1111-1111-1111 and zoe@example.com.";
    let ds = [Detector::CreditCard, Detector::Email];
    let m = |s| mask_text(&ds, s, text, b"k").map(Cow::into_owned);
    assert_eq!(
        m(MaskStrategy::Partial).as_deref(),
        Some("card ****-****-****-1111 and ***@*******.com.")
    );
    assert_eq!(
        m(MaskStrategy::Redact).as_deref(),
        Some("card [REDACTED] and [REDACTED].")
    );
    let hashed = m(MaskStrategy::Hash).unwrap_or_default();
    let card = apply(MaskStrategy::Hash, "4111-1111-1111-1111", b"k").unwrap_or_default();
    let mail = apply(MaskStrategy::Hash, "zoe@example.com", b"k").unwrap_or_default();
    assert_eq!(hashed, format!("card {card} and {mail}."));
    // Null: the whole value becomes NULL.
    assert_eq!(m(MaskStrategy::Null), None);
}
