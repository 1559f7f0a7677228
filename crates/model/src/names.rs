//! Repository names, tags, references and registry names, parsed by the OCI Distribution spec's grammar
//! (and ACR's for registry names). Once a handler holds one of these, it is valid.

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid repository name '{0}': use lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'")]
    Repository(String),
    #[error(
        "invalid tag '{0}': a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with '.' or '-'"
    )]
    Tag(String),
    #[error("invalid reference '{0}': expected a tag or a digest")]
    Reference(String),
    #[error("invalid registry name '{0}': use 5 to 50 letters and digits")]
    Registry(String),
}

/// The spec bounds the whole name (with the registry host) at 255 characters; we hold the repository to it.
pub const MAX_REPOSITORY_NAME: usize = 255;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    let alnum_run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && is_alnum_lower(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !alnum_run(&mut i) {
        return false;
    }
    while i < b.len() {
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !alnum_run(&mut i) {
            return false;
        }
    }
    true
}

impl FromStr for RepositoryName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_REPOSITORY_NAME || !s.split('/').all(valid_path_component)
        {
            return Err(NameError::Repository(s.to_string()));
        }
        Ok(RepositoryName(s.to_string()))
    }
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    /// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::Tag(s.to_string()))
        }
    }
}

/// What a manifest URL names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            s.parse()
                .map(Reference::Digest)
                .map_err(|_| NameError::Reference(s.to_string()))
        } else {
            s.parse()
                .map(Reference::Tag)
                .map_err(|_| NameError::Reference(s.to_string()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t.as_str()),
            Reference::Digest(d) => f.write_str(d.as_str()),
        }
    }
}

/// An ACR registry name: 5 to 50 alphanumerics, case-insensitive, kept lowercase.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryName(String);

impl RegistryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RegistryName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if (5..=50).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(RegistryName(s.to_ascii_lowercase()))
        } else {
            Err(NameError::Registry(s.to_string()))
        }
    }
}

macro_rules! string_newtype_traits {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}({:?})", stringify!($t), self.0) }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str { &self.0 }
        }
    )*};
}
string_newtype_traits!(RepositoryName, Tag, RegistryName);

macro_rules! string_newtype_serde {
    ($($t:ident),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(&self.0) }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
string_newtype_serde!(RepositoryName, Tag, RegistryName);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repository_grammar() {
        for good in ["a", "library/alpine", "a.b_c__d---e/f0", "x/y/z", "0abc"] {
            assert!(good.parse::<RepositoryName>().is_ok(), "{good}");
        }
        for bad in [
            "", "A", "a//b", "/a", "a/", "a..b", "a___b", "-a", "a-", "a_", "a b", "a:b", "a/_b",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
        assert!("a".repeat(256).parse::<RepositoryName>().is_err());
    }

    #[test]
    fn tag_grammar() {
        for good in ["latest", "_x", "v1.0-rc_2", &"a".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reference_chooses_by_colon() {
        assert!(matches!(
            "latest".parse::<Reference>(),
            Ok(Reference::Tag(_))
        ));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!("sha256:zz".parse::<Reference>().is_err());
    }

    #[test]
    fn registry_names() {
        assert_eq!("MyReg1".parse::<RegistryName>().unwrap().as_str(), "myreg1");
        for bad in ["abcd", "a-bcde", &"a".repeat(51)] {
            assert!(bad.parse::<RegistryName>().is_err());
        }
    }

    proptest! {
        #[test]
        fn generated_names_parse(parts in proptest::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", 1..4)) {
            let name = parts.join("/");
            prop_assert!(name.parse::<RepositoryName>().is_ok(), "{}", name);
        }

        #[test]
        fn parsers_never_panic(s in ".{0,300}") {
            let _ = s.parse::<RepositoryName>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn accepted_names_have_no_uppercase_or_double_slash(s in "[a-zA-Z0-9._/-]{1,40}") {
            if let Ok(n) = s.parse::<RepositoryName>() {
                prop_assert!(!n.as_str().contains("//"));
                prop_assert!(!n.as_str().chars().any(|c| c.is_ascii_uppercase()));
            }
        }
    }
}
