//! ARM's rules for the names and labels every resource carries: resource group names and tags. A name a caller
//! chooses ends up in resource ids, role-assignment scopes, activity-log rows and terminal output, so it is held to
//! ARM's grammar at every way in; tags are bounded as ARM bounds them, so a registry's settings stay small.

use crate::text;
use std::collections::BTreeMap;

/// ARM: a resource group name is 1 to 90 characters.
pub const MAX_RESOURCE_GROUP_NAME: usize = 90;
/// ARM: at most 50 tags on a resource.
pub const MAX_TAGS: usize = 50;
/// ARM: a tag name is at most 512 characters.
pub const MAX_TAG_NAME: usize = 512;
/// ARM: a tag value is at most 256 characters.
pub const MAX_TAG_VALUE: usize = 256;
/// Characters ARM refuses in tag names.
const TAG_NAME_FORBIDDEN: &[char] = &['<', '>', '%', '&', '\\', '?', '/'];

/// The value as an error message shows it: bounded, control characters written out.
fn shown(s: &str) -> String {
    text::bound(&text::escape(s), 120)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Resource group name '{0}' is invalid: use 1 to 90 letters, digits, underscores, parentheses, hyphens and periods, not ending in a period.")]
pub struct ResourceGroupNameError(String);

impl ResourceGroupNameError {
    /// ARM's code for it.
    pub fn code(&self) -> &'static str {
        "InvalidResourceGroupName"
    }
}

/// Checks a resource group name by ARM's rule: 1 to 90 characters, each a letter or digit (Unicode letters
/// included, as ARM's `\w`), `_`, `(`, `)`, `-` or `.`, and not ending in `.`.
pub fn check_resource_group_name(name: &str) -> Result<(), ResourceGroupNameError> {
    let count = name.chars().count();
    let ok = (1..=MAX_RESOURCE_GROUP_NAME).contains(&count)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '(' | ')' | '-' | '.'))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(ResourceGroupNameError(shown(name)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("A resource can have at most {MAX_TAGS} tags; the request has {0}.")]
    TooMany(usize),
    #[error("The tag name '{0}' is empty or longer than {MAX_TAG_NAME} characters.")]
    NameLength(String),
    #[error("The tag value of '{0}' is longer than {MAX_TAG_VALUE} characters.")]
    ValueLength(String),
    #[error("The tag name '{0}' has a character ARM refuses in tag names ('<', '>', '%', '&', '\\', '?', '/' or a control character).")]
    NameCharacters(String),
    #[error("The tag names '{0}' and '{1}' differ only in case; tag names are case-insensitive.")]
    Duplicate(String, String),
}

impl TagError {
    /// The ARM error code for it.
    pub fn code(&self) -> &'static str {
        match self {
            TagError::TooMany(_) => "TooManyTags",
            TagError::NameLength(_) => "InvalidTagNameLength",
            TagError::ValueLength(_) => "InvalidTagValueLength",
            TagError::NameCharacters(_) => "InvalidTagNameCharacters",
            TagError::Duplicate(..) => "InvalidTagName",
        }
    }
}

/// Checks a resource's tags by ARM's limits: at most 50, names 1 to 512 characters without `<>%&\?/` or control
/// characters and unique regardless of case, values at most 256 characters.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany(tags.len()));
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in tags {
        if name.is_empty() || name.chars().count() > MAX_TAG_NAME {
            return Err(TagError::NameLength(shown(name)));
        }
        if name
            .chars()
            .any(|c| TAG_NAME_FORBIDDEN.contains(&c) || text::is_dangerous(c))
        {
            return Err(TagError::NameCharacters(shown(name)));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(TagError::ValueLength(shown(name)));
        }
        if let Some(other) = seen.insert(name.to_lowercase(), name) {
            return Err(TagError::Duplicate(shown(other), shown(name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resource_group_names() {
        for good in [
            "rg1",
            "a",
            "My_RG-(prod).v2",
            "équipe",
            "グループ",
            &"a".repeat(90),
            &"é".repeat(90),
        ] {
            assert!(check_resource_group_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "rg.",
            "a b",
            "a/b",
            "a\nb",
            "a\u{202e}b",
            "a%2fb",
            "a:b",
            "a#b",
            "a@b",
            "<script>",
            &"a".repeat(91),
        ] {
            let e = check_resource_group_name(bad).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
            assert_eq!(e.code(), "InvalidResourceGroupName");
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tags_are_bounded_at_arms_limits() {
        let at = |n: usize| (0..n).map(|i| (format!("t{i}"), String::new())).collect();
        assert!(check_tags(&at(50)).is_ok());
        assert_eq!(check_tags(&at(51)), Err(TagError::TooMany(51)));
        let name = "n".repeat(512);
        let value = "é".repeat(256);
        assert!(check_tags(&tags(&[(&name, &value)])).is_ok());
        let long_name = "n".repeat(513);
        assert_eq!(
            check_tags(&tags(&[(&long_name, "")])).unwrap_err().code(),
            "InvalidTagNameLength"
        );
        let long_value = "v".repeat(257);
        assert_eq!(
            check_tags(&tags(&[("env", &long_value)]))
                .unwrap_err()
                .code(),
            "InvalidTagValueLength"
        );
        assert_eq!(
            check_tags(&tags(&[("", "x")])).unwrap_err().code(),
            "InvalidTagNameLength"
        );
        for bad in [
            "a/b", "a?b", "a<b", "a>b", "a%b", "a&b", "a\\b", "a\nb", "a\u{1b}b",
        ] {
            assert_eq!(
                check_tags(&tags(&[(bad, "x")])).unwrap_err().code(),
                "InvalidTagNameCharacters",
                "{bad:?}"
            );
        }
        assert_eq!(
            check_tags(&tags(&[("Env", "a"), ("env", "b")]))
                .unwrap_err()
                .code(),
            "InvalidTagName"
        );
    }

    proptest! {
        #[test]
        fn accepted_group_names_are_safe_in_a_path(s in "\\PC{0,100}") {
            if check_resource_group_name(&s).is_ok() {
                prop_assert!(!s.contains('/') && !s.contains('?') && !s.contains('#') && !s.contains('%'));
                prop_assert!(!s.chars().any(text::is_dangerous));
            }
        }
    }
}
