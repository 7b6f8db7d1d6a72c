//! Configuration text: a TOML file, and `TETHER_*` / flag values layered over it. The keys are
//! mostly real ones (so every key's parser is reached) and sometimes arbitrary.
//!
//! The input up to the first NUL byte is the TOML file, so seeds are plain config files; the
//! bytes after it are read structurally as environment, flag and variable pairs.
#![no_main]

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tether::config::{Config, KEYS, Sources};

#[derive(Arbitrary, Debug)]
struct Layers<'a> {
    env: Vec<Pair<'a>>,
    flags: Vec<Pair<'a>>,
    vars: Vec<(&'a str, &'a str)>,
}

#[derive(Arbitrary, Debug)]
struct Pair<'a> {
    /// Below 200 picks a real key; above, `other` is used as the key.
    pick: u8,
    other: &'a str,
    value: Value<'a>,
}

/// Values shaped like what the keys read, or anything.
#[derive(Arbitrary, Debug)]
enum Value<'a> {
    Any(&'a str),
    Number(i64),
    Duration(u64, Unit),
    List(Vec<&'a str>),
}

#[derive(Arbitrary, Debug)]
enum Unit {
    Ns,
    Ms,
    S,
    M,
    H,
    D,
}

impl Pair<'_> {
    fn key(&self) -> String {
        if self.pick < 200 {
            KEYS[usize::from(self.pick) % KEYS.len()].to_string()
        } else {
            self.other.to_string()
        }
    }

    fn value(&self) -> String {
        match &self.value {
            Value::Any(s) => (*s).to_string(),
            Value::Number(n) => n.to_string(),
            Value::Duration(n, u) => {
                let unit = match u {
                    Unit::Ns => "ns",
                    Unit::Ms => "ms",
                    Unit::S => "s",
                    Unit::M => "m",
                    Unit::H => "h",
                    Unit::D => "d",
                };
                format!("{n}{unit}")
            }
            Value::List(items) => items.join(","),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (file, rest) = match data.iter().position(|b| *b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(c) = Config::from_toml(&String::from_utf8_lossy(file), Path::new("fuzz.toml")) {
        let _ = c.validate();
    }
    let Ok(input) = Layers::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let pairs = |ps: &[Pair<'_>]| ps.iter().map(|p| (p.key(), p.value())).collect::<Vec<_>>();
    let sources = Sources {
        file: None,
        env: pairs(&input.env),
        flags: pairs(&input.flags),
    };
    if let Ok(c) = sources.load() {
        // A loaded config is a validated one.
        assert!(c.validate().is_ok());
        let _ = c.effective_max_connections();
    }
    let vars = input
        .vars
        .iter()
        .map(|(k, v)| (format!("TETHER_{k}"), (*v).to_string()));
    if let Ok(env) = Sources::env_from(vars) {
        assert!(env.iter().all(|(k, _)| KEYS.contains(&k.as_str())));
    }
});
