//! Query strings: one parameter's value, percent-decoded (`+` as a space, as forms write it).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The value of `name` in a query string, percent-decoded; `Err` when it is not UTF-8.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Result<Cow<'a, str>, ()>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| decode(v))
    })
}

fn decode(v: &str) -> Result<Cow<'_, str>, ()> {
    if !v.contains('+') {
        return percent_decode_str(v).decode_utf8().map_err(|_| ());
    }
    let spaced = v.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| Cow::Owned(s.into_owned()))
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param("a=1&client_id=al%20ice", "client_id"),
            Some(Ok("al ice".into()))
        );
        assert_eq!(
            query_param("client_id=b+c", "client_id"),
            Some(Ok("b c".into()))
        );
        assert_eq!(
            query_param("client_id=%C3%A9", "client_id"),
            Some(Ok("é".into()))
        );
        assert_eq!(query_param("client_id=%FF", "client_id"), Some(Err(())));
        assert_eq!(
            query_param("client_id=%4", "client_id"),
            Some(Ok("%4".into()))
        );
        assert_eq!(query_param("x=1", "client_id"), None);
    }
}
