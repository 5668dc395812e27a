//! The KV cache of a loaded model's slots, reused the way Ollama's runners
//! reuse it.
//!
//! Each of a loaded model's `num_parallel` slots keeps the tokens it last
//! processed (the prompt, then what it generated), at most its context
//! long. A new request takes a free slot, and only the part of its prompt
//! past the longest prefix that slot already holds is prefilled — always at
//! least one token, which the runner needs to sample from. An unload takes
//! every slot with it (the [`Slots`] live in the loaded model).
//!
//! Which free slot a request gets follows the runner of the Ollama release
//! the device plays ([`SlotRule::for_version`]):
//!
//! - Ollama before 0.30 (its Go runners, `runner/ollamarunner/cache.go` and
//!   `runner/llamarunner/cache.go`, `LoadCacheSlot` →
//!   `findLongestCacheSlot`, the default without `OLLAMA_MULTIUSER_CACHE`):
//!   the free slot with the longest common prefix, the first on a tie,
//!   even with nothing in common; its old contents past the prefix are
//!   overwritten.
//! - Ollama 0.30 and later, which runs upstream llama-server
//!   (`tools/server/server-context.cpp`, `get_available_slot`, with
//!   Ollama's defaults: `--slot-prompt-similarity 0.1`): among free slots
//!   with something cached, the one whose common prefix is the largest
//!   share of the new prompt, if that share exceeds 0.1; else the least
//!   recently used free slot. (llama-server's host-RAM prompt cache, which
//!   can restore an evicted prefix by a copy, is not modelled: an evicted
//!   prefix is prefilled again.)
//!
//! Tokens are pseudo-tokens: four bytes of the rendered prompt each (about
//! a token of English), compared as numbers, so two prompts share exactly
//! as many pseudo-tokens as they share leading 4-byte groups.

/// One pseudo-token: four bytes of the rendered prompt.
pub type Token = u32;

/// A rendered prompt as pseudo-tokens (the last one zero-padded).
pub fn tokenize(text: &str) -> Vec<Token> {
    text.as_bytes()
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect()
}

/// How a runner picks the free slot for a request (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRule {
    /// Ollama's Go runners (before 0.30): `findLongestCacheSlot`.
    LongestFree,
    /// llama-server (Ollama 0.30 and later): `get_available_slot`.
    SimilarOrLeastRecent,
}

/// llama-server's `slot_prompt_similarity` default, which Ollama keeps.
const SIMILARITY: f64 = 0.1;

impl SlotRule {
    /// The rule of the runner an Ollama of this version uses.
    pub fn for_version(at_least_0_30: bool) -> Self {
        if at_least_0_30 {
            SlotRule::SimilarOrLeastRecent
        } else {
            SlotRule::LongestFree
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    tokens: Vec<Token>,
    in_use: bool,
    last_used: u64,
}

/// The slots of one loaded model.
#[derive(Debug, Clone)]
pub struct Slots {
    slots: Vec<Slot>,
    /// Tokens a slot holds at most (the model's context).
    context: usize,
    clock: u64,
}

fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Slots {
    /// `n` empty slots of `context` tokens each.
    pub fn new(n: usize, context: usize) -> Self {
        Slots {
            slots: vec![Slot::default(); n.max(1)],
            context: context.max(1),
            clock: 0,
        }
    }

    /// Takes a free slot for `prompt` by `rule`; it will hold `then` (the
    /// prompt and what will be generated, cut to the context). Returns the
    /// slot and how many of the prompt's tokens it reuses (never all of
    /// them: one is always evaluated). `None` when every slot is in use.
    pub fn take(
        &mut self,
        rule: SlotRule,
        prompt: &[Token],
        then: &[Token],
    ) -> Option<(usize, usize)> {
        let free = || self.slots.iter().enumerate().filter(|(_, s)| !s.in_use);
        let lcp = |s: &Slot| common_prefix(&s.tokens, prompt);
        let chosen = match rule {
            SlotRule::LongestFree => {
                // The first free slot with the longest match (max_by_key
                // would keep the last of equals).
                let mut best: Option<(usize, usize)> = None;
                for (i, s) in free() {
                    let n = lcp(s);
                    if best.is_none_or(|(_, b)| n > b) {
                        best = Some((i, n));
                    }
                }
                best.map(|(i, _)| i)
            }
            SlotRule::SimilarOrLeastRecent => {
                let similar = free()
                    .filter(|(_, s)| !s.tokens.is_empty() && !prompt.is_empty())
                    .map(|(i, s)| (i, lcp(s) as f64 / prompt.len() as f64))
                    .filter(|(_, sim)| *sim > SIMILARITY)
                    .fold(None::<(usize, f64)>, |best, (i, sim)| match best {
                        Some((_, b)) if b >= sim => best,
                        _ => Some((i, sim)),
                    });
                similar
                    .map(|(i, _)| i)
                    .or_else(|| free().min_by_key(|(_, s)| s.last_used).map(|(i, _)| i))
            }
        }?;
        self.clock += 1;
        let context = self.context;
        let slot = &mut self.slots[chosen];
        let reused = lcp(slot).min(prompt.len().saturating_sub(1));
        slot.in_use = true;
        slot.last_used = self.clock;
        slot.tokens.clear();
        slot.tokens
            .extend_from_slice(&then[..then.len().min(context)]);
        Some((chosen, reused))
    }

    /// Gives slot `i` back (its cache stays).
    pub fn release(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.in_use = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<Token> {
        tokenize(s)
    }

    #[test]
    fn a_follow_up_reuses_its_slot_and_reprocesses_one_token() {
        let mut s = Slots::new(1, 1024);
        let turn1 = "system: be brief\nuser: hi\nassistant: ";
        let then = format!("{turn1}hello\n");
        let (i, reused) = s.take(SlotRule::LongestFree, &t(turn1), &t(&then)).unwrap();
        assert_eq!(reused, 0);
        s.release(i);
        let turn2 = format!("{then}user: more\nassistant: ");
        let (_, reused) = s
            .take(SlotRule::LongestFree, &t(&turn2), &t(&turn2))
            .unwrap();
        assert_eq!(reused, then.len() / 4);
        s.release(0);
        // The very same prompt again: all but the last token.
        let (_, reused) = s
            .take(SlotRule::LongestFree, &t(&turn2), &t(&turn2))
            .unwrap();
        assert_eq!(reused, t(&turn2).len() - 1);
        // Busy: no slot.
        assert!(s.take(SlotRule::LongestFree, &t("x"), &t("x")).is_none());
    }

    #[test]
    fn go_runners_take_the_longest_free_match_and_overwrite_it() {
        let mut s = Slots::new(2, 1024);
        let a = t("conversation A with a long shared head....");
        let b = t("conversation B is different from the start");
        s.take(SlotRule::LongestFree, &a, &a).unwrap();
        s.take(SlotRule::LongestFree, &b, &b).unwrap();
        s.release(0);
        s.release(1);
        // B again goes to slot 1; something new goes to the first slot
        // with the longest match — none: slot 0, overwriting A.
        assert_eq!(
            s.take(SlotRule::LongestFree, &b, &b).unwrap(),
            (1, b.len() - 1)
        );
        let c = t("zzzz something unrelated");
        assert_eq!(s.take(SlotRule::LongestFree, &c, &c).unwrap(), (0, 0));
        s.release(0);
        assert_eq!(
            s.take(SlotRule::LongestFree, &a, &a).unwrap().1,
            0,
            "A was overwritten"
        );
    }

    #[test]
    fn llama_server_prefers_similar_else_least_recent() {
        let mut s = Slots::new(2, 1024);
        let a = t("conversation A with a long shared head....");
        let b = t("conversation B is different from the start");
        s.take(SlotRule::SimilarOrLeastRecent, &a, &a).unwrap();
        s.take(SlotRule::SimilarOrLeastRecent, &b, &b).unwrap();
        s.release(0);
        s.release(1);
        // Nothing similar: the least recently used slot (0, holding A).
        let c = t("zzzz something unrelated");
        assert_eq!(
            s.take(SlotRule::SimilarOrLeastRecent, &c, &c).unwrap(),
            (0, 0)
        );
        s.release(0);
        // B is similar to slot 1.
        assert_eq!(
            s.take(SlotRule::SimilarOrLeastRecent, &b, &b).unwrap(),
            (1, b.len() - 1)
        );
        s.release(1);
        // "conv" shared by both slots is under 10% of a long prompt: LRU.
        let long = t(&format!("conv{}", "q".repeat(400)));
        assert_eq!(
            s.take(SlotRule::SimilarOrLeastRecent, &long, &long)
                .unwrap(),
            (0, 0)
        );
    }

    #[test]
    fn a_slot_holds_at_most_its_context() {
        let mut s = Slots::new(1, 8);
        let long = t(&"abcd".repeat(20));
        s.take(SlotRule::LongestFree, &long, &long).unwrap();
        s.release(0);
        assert_eq!(s.take(SlotRule::LongestFree, &long, &long).unwrap().1, 8);
    }
}
