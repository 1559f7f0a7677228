//! Region names (a registry's `location`) and the DNS domain registries are served under: the parts a data
//! endpoint's host name is built from. A data-endpoint redirect carries the repository, the digest and a signed
//! link, so its host must be a name Moat controls: built only from a [`RegistryName`], a [`Location`] and a
//! [`DnsDomain`], each of which only its validator makes. A location that came from a caller and was never
//! checked (a newline, `evil.com/`, a Unicode look-alike) can therefore never reach a `Location` header.

use crate::names::RegistryName;
use crate::text;
use std::fmt;
use std::str::FromStr;

/// The longest region name: it is one DNS label of the data endpoint's host (RFC 1035: 63 octets).
pub const MAX_LOCATION_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("The location '{0}' is not a region name: use letters and digits, at most 63 (e.g. 'westeurope'; ARM's display form 'West Europe' is accepted and stored as 'westeurope').")]
    Invalid(String),
}

/// A region name as ARM stores it: lower-case ASCII letters and digits, 1 to 63 (`westeurope`, `eastus2`,
/// `local`). Built only by [`Location::parse`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location(String);

impl Location {
    /// Accepts a region name in either of ARM's spellings and returns its stored form: the name (`westeurope`, any
    /// case) or the display name (`West Europe`: words of letters and digits separated by single spaces), which
    /// ARM normalises by dropping the spaces and lower-casing. Anything else is refused, naming the value with its
    /// control characters written out.
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        let refuse = || LocationError::Invalid(text::bound(&text::escape(s), 200));
        // Bounded before it is walked: the display form of the longest name has at most one space per letter.
        if s.is_empty() || s.len() > 2 * MAX_LOCATION_LEN {
            return Err(refuse());
        }
        let words: Vec<&str> = s.split(' ').collect();
        if words
            .iter()
            .any(|w| w.is_empty() || !w.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(refuse());
        }
        let name = words.concat().to_ascii_lowercase();
        if name.len() > MAX_LOCATION_LEN {
            return Err(refuse());
        }
        Ok(Location(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Location {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Location, LocationError> {
        Location::parse(s)
    }
}

/// A registry's location as its stored settings hold it. A database written before locations were validated may
/// hold a value that is not a region name: the registry still loads and shows what it holds, but that value is
/// never used to build a host name (its data endpoint is off until the location is set to a region name; blobs
/// are then served by the login server, where every rule applies the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredLocation {
    Region(Location),
    /// What the database holds, as it holds it.
    Unusable(String),
}

impl StoredLocation {
    /// Reads a stored value: the region it names, or the value kept as unusable.
    pub fn from_stored(s: &str) -> StoredLocation {
        match Location::parse(s) {
            Ok(l) => StoredLocation::Region(l),
            Err(_) => StoredLocation::Unusable(s.to_string()),
        }
    }

    /// The region, when the stored value is one.
    pub fn region(&self) -> Option<&Location> {
        match self {
            StoredLocation::Region(l) => Some(l),
            StoredLocation::Unusable(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StoredLocation::Region(l) => l.as_str(),
            StoredLocation::Unusable(s) => s,
        }
    }

    /// Whether a registry at this location may be given `next`: the same region, or a region at all when the
    /// stored value is unusable (the one way to repair it, since a location is otherwise immutable).
    pub fn may_become(&self, next: &Location) -> bool {
        match self {
            StoredLocation::Region(l) => l == next,
            StoredLocation::Unusable(_) => true,
        }
    }
}

impl From<Location> for StoredLocation {
    fn from(l: Location) -> StoredLocation {
        StoredLocation::Region(l)
    }
}

impl serde::Serialize for StoredLocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for StoredLocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(StoredLocation::from_stored(&s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("'{0}' is not a DNS domain: use labels of letters, digits and inner hyphens (1 to 63 each) joined by dots, at most 253 in all (e.g. 'registry.example.com')")]
    Invalid(String),
}

/// The DNS domain registries are served under (`--domain`), lower-cased: labels of `[a-z0-9]` with inner hyphens,
/// 1 to 63 each, 253 in all. Built only by [`DnsDomain::parse`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DnsDomain(String);

impl DnsDomain {
    pub fn parse(s: &str) -> Result<DnsDomain, DomainError> {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            (1..=63).contains(&b.len())
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
            return Err(DomainError::Invalid(text::bound(&text::escape(s), 300)));
        }
        Ok(DnsDomain(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsDomain {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<DnsDomain, DomainError> {
        DnsDomain::parse(s)
    }
}

impl std::ops::Deref for DnsDomain {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// `<registry>.<region>.data.<domain>`: a dedicated data endpoint's host name (without a port). The region is the
/// second label, where `az acr show-endpoints` reads it. Only validated parts go in, so the result is a host name
/// under the server's domain whatever a caller sent.
pub fn data_endpoint_host(
    registry: &RegistryName,
    location: &Location,
    domain: &DnsDomain,
) -> String {
    format!("{registry}.{location}.data.{domain}")
}

macro_rules! display_as_str {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}({:?})", stringify!($t), self.0) }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(&self.0) }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $t::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
display_as_str!(Location, DnsDomain);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn region_names_and_display_names_are_stored_lower_case() {
        for (given, stored) in [
            ("westeurope", "westeurope"),
            ("WestEurope", "westeurope"),
            ("West Europe", "westeurope"),
            ("east us 2", "eastus2"),
            ("local", "local"),
            ("X", "x"),
        ] {
            assert_eq!(Location::parse(given).unwrap().as_str(), stored, "{given}");
        }
        assert!(Location::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn anything_else_is_refused_naming_the_value_escaped() {
        for bad in [
            "",
            " ",
            "westeurope\n",
            "west\r\nLocation: x",
            "evil.com",
            "evil.com/x?",
            "west-europe",
            "west_europe",
            "west  europe",
            " westeurope",
            "westeurope ",
            "west\teurope",
            "wëst",
            "ｗｅｓｔ",
            "west\u{202e}",
            "a:443",
            "a@b",
            &"a".repeat(64),
            &"a ".repeat(40),
        ] {
            let e = Location::parse(bad).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
            assert!(!e.to_string().contains('\r'), "{e}");
        }
        let e = Location::parse("x\ny").unwrap_err().to_string();
        assert!(e.contains("'x\\ny'"), "{e}");
    }

    #[test]
    fn stored_values_that_are_not_regions_are_kept_but_unusable() {
        assert_eq!(
            StoredLocation::from_stored("West Europe").region(),
            Some(&Location::parse("westeurope").unwrap())
        );
        let bad = StoredLocation::from_stored("evil.com/\n");
        assert_eq!(bad.region(), None);
        assert_eq!(bad.as_str(), "evil.com/\n");
        assert!(bad.may_become(&Location::parse("local").unwrap()));
        let good = StoredLocation::from_stored("local");
        assert!(good.may_become(&Location::parse("LOCAL").unwrap()));
        assert!(!good.may_become(&Location::parse("westeurope").unwrap()));
        let json = serde_json::to_string(&bad).unwrap();
        assert_eq!(serde_json::from_str::<StoredLocation>(&json).unwrap(), bad);
        assert!(serde_json::from_str::<Location>("\"evil.com\"").is_err());
    }

    #[test]
    fn domains() {
        for good in ["localhost", "moat.test", "Registry.Example.COM", "a-b.c0"] {
            assert!(DnsDomain::parse(good).is_ok(), "{good}");
        }
        assert_eq!(DnsDomain::parse("A.Test").unwrap().as_str(), "a.test");
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            ".a",
            "-a.b",
            "a-.b",
            "a_b",
            "a b",
            "a/b",
            "a\nb",
            "é.test",
            &"a".repeat(64),
        ] {
            assert!(DnsDomain::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_endpoint_hosts_are_built_from_valid_parts() {
        let host = data_endpoint_host(
            &"MyReg1".parse().unwrap(),
            &Location::parse("West Europe").unwrap(),
            &DnsDomain::parse("moat.test").unwrap(),
        );
        assert_eq!(host, "myreg1.westeurope.data.moat.test");
    }

    proptest! {
        #[test]
        fn accepted_locations_are_one_dns_label(s in "\\PC{0,80}") {
            if let Ok(l) = Location::parse(&s) {
                prop_assert!(!l.as_str().is_empty() && l.as_str().len() <= MAX_LOCATION_LEN);
                prop_assert!(l.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            }
        }

        #[test]
        fn built_hosts_stay_under_the_domain(reg in "[a-zA-Z0-9]{5,50}", loc in "[ -~]{0,70}") {
            if let Ok(loc) = Location::parse(&loc) {
                let domain = DnsDomain::parse("moat.test").unwrap();
                let host = data_endpoint_host(&reg.parse().unwrap(), &loc, &domain);
                prop_assert!(host.ends_with(".data.moat.test"));
                prop_assert_eq!(host.split('.').count(), 5);
            }
        }
    }
}
