//! The SYNTHETIC corpus: short stories generated from a small probabilistic grammar, for
//! tests and offline demos. It is labelled as synthetic in the manifest, in `ar prepare`'s
//! summary and in every result record, because its bits-per-byte mean nothing about real
//! text.
//!
//! It still has structure worth learning, so a model that trains on it visibly improves:
//! each story keeps one hero whose pronoun agrees with the name, counts of things are
//! added and subtracted correctly ("had 7 apples … ate 3 … had 4 left"), dialogue is
//! quoted and attributed, and a few names carry non-ASCII letters so multi-byte tokens
//! go through the whole pipeline. Document `i` depends only on the seed and `i`, so any
//! prefix of the corpus is the same whatever its size.

/// Seed of the corpus; changing it changes every document.
pub const SEED: u64 = 0x5EED_A170_2E5E_A2C4;

/// SplitMix64: tiny, good enough for text, and identical on every platform and version.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// (name, subject pronoun, object pronoun, possessive)
const HEROES: &[(&str, &str, &str, &str)] = &[
    ("Mia", "she", "her", "her"),
    ("Tom", "he", "him", "his"),
    ("Lily", "she", "her", "her"),
    ("Ben", "he", "him", "his"),
    ("Zoë", "she", "her", "her"),
    ("José", "he", "him", "his"),
    ("Anaïs", "she", "her", "her"),
    ("Sam", "he", "him", "his"),
    ("Ruby", "she", "her", "her"),
    ("Max", "he", "him", "his"),
    ("Nora", "she", "her", "her"),
    ("Leo", "he", "him", "his"),
];

const ANIMALS: &[&str] = &["cat", "dog", "rabbit", "fox", "bear", "duck", "owl", "mouse"];
const ADJECTIVES: &[&str] = &["little", "brave", "shy", "happy", "curious", "sleepy", "kind"];
const PLACES: &[&str] =
    &["a small village", "the big forest", "a house by the sea", "a busy town", "the hills"];
const COLORS: &[&str] = &["red", "blue", "green", "yellow", "purple", "orange"];
const OBJECTS: &[&str] = &["ball", "kite", "hat", "box", "book", "boat"];
const FRUITS: &[&str] = &["apples", "pears", "plums", "cherries", "berries"];
const FRIENDS: &[&str] = &["a frog", "a bird", "a turtle", "a squirrel", "a goat"];
const FEELINGS: &[&str] = &["happy", "sad", "surprised", "proud", "tired"];
const NUMBER_WORDS: &[&str] =
    &["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Generates document `index` of the corpus.
pub fn document(index: u64) -> String {
    let mut rng = Rng::new(SEED ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let (name, he, him, his) = HEROES[rng.below(HEROES.len())];
    let animal = rng.pick(ANIMALS);
    let mut out = format!(
        "Once upon a time, {name} the {} {animal} lived in {}.",
        rng.pick(ADJECTIVES),
        rng.pick(PLACES)
    );
    let sentences = 3 + rng.below(6);
    for _ in 0..sentences {
        out.push(' ');
        match rng.below(6) {
            0 => {
                // Arithmetic that is always right: a model can learn to subtract.
                let fruit = rng.pick(FRUITS);
                let have = 2 + rng.below(9);
                let ate = 1 + rng.below(have - 1);
                let words = rng.chance(50);
                let num = |n: usize| {
                    if words { NUMBER_WORDS[n].to_string() } else { n.to_string() }
                };
                out.push_str(&format!(
                    "{name} had {} {fruit}. {} ate {} of them, so {he} had {} left.",
                    num(have),
                    capitalize(he),
                    num(ate),
                    num(have - ate)
                ));
            }
            1 => {
                let color = rng.pick(COLORS);
                let object = rng.pick(OBJECTS);
                out.push_str(&format!(
                    "\"I like my {color} {object},\" said {name}. \"It is the best {object} in the world!\""
                ));
            }
            2 => {
                let friend = rng.pick(FRIENDS);
                out.push_str(&format!(
                    "One day {he} met {friend}. The {} asked {him} to play, and {he} said yes.",
                    &friend[2..]
                ));
            }
            3 => {
                let feeling = rng.pick(FEELINGS);
                out.push_str(&format!("{} felt {feeling}, so {he} went for a walk.", capitalize(he)));
            }
            4 => {
                let color = rng.pick(COLORS);
                let object = rng.pick(OBJECTS);
                out.push_str(&format!(
                    "{name} lost {his} {color} {object}. {} looked everywhere until {he} found it.",
                    capitalize(he)
                ));
            }
            _ => {
                let a = 1 + rng.below(5);
                let b = 1 + rng.below(5);
                out.push_str(&format!("{name} counted {a} stars and then {b} more: {} stars in all.", a + b));
            }
        }
        if rng.chance(12) {
            out.push('\n');
        }
    }
    out.push_str(if rng.chance(50) { " The end." } else { " And they were happy." });
    out
}

/// The first `n` documents.
pub fn documents(n: u64) -> impl Iterator<Item = String> {
    (0..n).map(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_documents_are_deterministic_and_distinct() {
        assert_eq!(document(7), document(7));
        assert_ne!(document(7), document(8));
        let docs: std::collections::HashSet<String> = documents(500).collect();
        assert!(docs.len() > 490, "only {} distinct documents", docs.len());
    }

    #[test]
    fn test_arithmetic_in_stories_is_right() {
        let mut checked = 0;
        for i in 0..300 {
            let doc = document(i);
            for part in doc.split(" stars in all.") {
                if let Some(pos) = part.rfind("counted ") {
                    let rest = &part[pos + 8..];
                    let nums: Vec<usize> =
                        rest.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect();
                    if nums.len() == 3 {
                        assert_eq!(nums[0] + nums[1], nums[2], "{doc}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 20, "only {checked} sums checked");
    }

    #[test]
    fn test_corpus_contains_multibyte_text() {
        assert!(documents(200).any(|d| d.contains('ë') || d.contains('é') || d.contains('ï')));
    }
}
