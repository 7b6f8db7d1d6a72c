//! The permessage-deflate negotiation of the upgrade (RFC 7692 §5, §7.1): which offer in the
//! client's `Sec-WebSocket-Extensions` tether accepts, and the answer it sends.
//!
//! tether always answers `server_no_context_takeover; client_no_context_takeover` (both are
//! allowed whether or not the offer asked for them, §7.1.1), so neither side keeps a sliding
//! window between messages and no connection holds compressor state. `server_max_window_bits=N`
//! is honoured for N in 9..=15 by compressing with that window and echoing N; an offer of 8 is
//! declined, because zlib's raw deflate cannot use a 256-byte window. `client_max_window_bits` is
//! never answered: tether inflates with a 32 KiB window, which reads any client window, and the
//! RFC forbids answering it when the offer lacks it. An offer with an unknown, repeated or
//! malformed parameter is declined and the next offer is tried; an upgrade with no acceptable
//! offer simply proceeds without compression.

/// Window bits tether can compress with (zlib's raw deflate has no 8-bit window).
const WINDOWS: std::ops::RangeInclusive<u8> = 9..=15;

/// What a session agreed to: permessage-deflate with no context takeover either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The window tether compresses with: the offer's `server_max_window_bits`, else 15.
    pub window_bits: u8,
    /// The offer named `server_max_window_bits`, so the answer must carry it (§7.1.2.1).
    echo_window: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub fn response(&self) -> String {
        let mut v = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.echo_window {
            v.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        v
    }
}

/// Picks the first permessage-deflate offer tether can honour from the request's
/// `Sec-WebSocket-Extensions` values, in the order the client listed them.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreed> {
    values
        .into_iter()
        // A header that is not text cannot hold a valid offer; the others may still.
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| split_outside_quotes(v, ','))
        .find_map(accept)
}

/// Accepts one extension offer (`name; param; param=value`) when it is a permessage-deflate
/// offer tether can honour.
fn accept(offer: &str) -> Option<Agreed> {
    let mut parts = split_outside_quotes(offer, ';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct, mut server_bits, mut client_bits) =
        (false, false, None, None);
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let seen = if key.eq_ignore_ascii_case("server_no_context_takeover") {
            value.is_none().then_some(())?;
            std::mem::replace(&mut server_nct, true)
        } else if key.eq_ignore_ascii_case("client_no_context_takeover") {
            value.is_none().then_some(())?;
            std::mem::replace(&mut client_nct, true)
        } else if key.eq_ignore_ascii_case("server_max_window_bits") {
            // The server's window needs a value (§7.1.2.1).
            let bits = window(value?)?;
            server_bits.replace(bits).is_some()
        } else if key.eq_ignore_ascii_case("client_max_window_bits") {
            // The client's may come bare: "I can limit mine if you ask" (§7.1.2.2).
            let bits = match value {
                Some(v) => Some(window(v)?),
                None => None,
            };
            client_bits.replace(bits).is_some()
        } else {
            // An unknown parameter: the offer means something tether does not implement.
            return None;
        };
        if seen {
            // A repeated parameter makes the offer invalid (§7).
            return None;
        }
    }
    match server_bits {
        None => Some(Agreed {
            window_bits: 15,
            echo_window: false,
        }),
        Some(bits) if WINDOWS.contains(&bits) => Some(Agreed {
            window_bits: bits,
            echo_window: true,
        }),
        // A window tether cannot compress with: decline this offer, try the next.
        Some(_) => None,
    }
}

/// A window-bits value: 8 to 15 in decimal, no leading zero or sign (§7.1.2.1).
fn window(v: String) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A parameter value as a token or a quoted string (RFC 6455 §9.1); None when malformed.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.is_empty() && !v.contains('"')).then(|| v.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Splits `s` at `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(values: &[&str]) -> Option<Agreed> {
        negotiate(values.iter().map(|v| v.as_bytes()))
    }

    fn bits(values: &[&str]) -> Option<u8> {
        pick(values).map(|a| a.window_bits)
    }

    #[test]
    fn a_plain_offer_is_accepted_with_no_context_takeover_both_ways() {
        let a = pick(&["permessage-deflate"]).unwrap();
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        // What browsers send.
        let a = pick(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(a.window_bits, 15);
        assert!(!a.response().contains("client_max_window_bits"));
    }

    #[test]
    fn server_window_bits_are_echoed_or_the_offer_declined() {
        let a = pick(&["permessage-deflate; server_max_window_bits=10"]).unwrap();
        assert_eq!(a.window_bits, 10);
        assert!(a.response().ends_with("; server_max_window_bits=10"));
        assert_eq!(
            bits(&["permessage-deflate; server_max_window_bits=\"9\""]),
            Some(9)
        );
        assert_eq!(
            bits(&["permessage-deflate; server_max_window_bits=8"]),
            None
        );
        // Declined, then the next offer is taken.
        let next = "permessage-deflate; server_max_window_bits=8, permessage-deflate";
        assert_eq!(bits(&[next]), Some(15));
        assert_eq!(
            bits(&[
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; server_max_window_bits=12"
            ]),
            Some(12)
        );
    }

    #[test]
    fn malformed_or_repeated_parameters_decline_that_offer() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=\"1\"5\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; x_unknown",
            "permessage-deflate; server_max_window_bits=\"10",
            "x-webkit-deflate-frame",
            "",
            ";;;",
        ] {
            assert_eq!(pick(&[bad]), None, "{bad:?} must be declined");
        }
        let after_bad =
            "permessage-deflate; server_no_context_takeover=\"a,b\", permessage-deflate";
        assert_eq!(
            bits(&[after_bad]),
            Some(15),
            "a quoted comma does not split offers"
        );
    }

    #[test]
    fn every_known_parameter_together() {
        let all = "Permessage-Deflate ; Client_No_Context_Takeover ; server_no_context_takeover ; \
                   client_max_window_bits=12 ; server_max_window_bits=15";
        let a = pick(&[all]).unwrap();
        assert_eq!(a.window_bits, 15);
        assert!(a.response().ends_with("server_max_window_bits=15"));
    }

    #[test]
    fn non_utf8_headers_are_skipped() {
        let values: [&[u8]; 2] = [b"\xffpermessage-deflate", b"permessage-deflate"];
        assert_eq!(negotiate(values).map(|a| a.window_bits), Some(15));
    }
}
