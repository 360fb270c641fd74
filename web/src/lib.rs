//! HelloPears in a browser tab. The Leptos app and the in-tab peer build on this crate;
//! for now it holds the share-link format both homes of the UI use.

use hellopears_core::topic::Topic;

/// The topic a share link's fragment names (`#topic=NAME`), or the default topic.
pub fn topic_from_fragment(fragment: &str) -> Topic {
    let fragment = fragment.trim_start_matches('#');
    let name = fragment
        .split('&')
        .find_map(|pair| pair.strip_prefix("topic="))
        .filter(|name| !name.is_empty())
        .unwrap_or("todo");
    Topic::from_name(name)
}

/// The fragment of a share link for a topic.
pub fn share_fragment(topic: &Topic) -> String {
    format!("#topic={}", topic.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_links_round_trip() {
        let topic = Topic::from_name("groceries");
        assert_eq!(topic_from_fragment(&share_fragment(&topic)), topic);
        assert_eq!(topic_from_fragment("").name(), "todo");
        assert_eq!(topic_from_fragment("#x=1&topic=work").name(), "work");
    }
}
