//! Making sure the recovery phrase was written down: after the words are shown, the person
//! types a few of them back. Until that succeeds the profile records the backup as unconfirmed,
//! so an app can keep reminding them.

use std::fmt;

use latchkey_proto::keys::RecoveryPhrase;
use rand::seq::index::sample;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::profile::Profile;

/// How many words are asked back.
pub const WORDS_TO_CONFIRM: usize = 3;
pub(crate) const BACKUP_CONFIRMED: &str = "backup_confirmed";

/// The words to be typed back, at random positions, held only in memory.
#[derive(Clone)]
pub struct BackupCheck {
    /// 1-based position and the word there, in increasing position.
    words: Vec<(u32, Zeroizing<String>)>,
}

impl fmt::Debug for BackupCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupCheck")
            .field("positions", &self.positions())
            .finish_non_exhaustive()
    }
}

impl BackupCheck {
    pub fn new(phrase: &RecoveryPhrase, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let all = phrase.words();
        let mut picked = sample(rng, all.len(), WORDS_TO_CONFIRM.min(all.len())).into_vec();
        picked.sort_unstable();
        BackupCheck {
            words: picked
                .into_iter()
                .map(|i| (i as u32 + 1, Zeroizing::new(all[i].to_owned())))
                .collect(),
        }
    }

    /// The 1-based positions to ask for, in order.
    pub fn positions(&self) -> Vec<u32> {
        self.words.iter().map(|(p, _)| *p).collect()
    }

    /// Checks the answers, in the order of [`Self::positions`]; case and surrounding white
    /// space are forgiven.
    pub fn verify(&self, answers: &[String]) -> Result<()> {
        for (i, (position, word)) in self.words.iter().enumerate() {
            let given = answers.get(i).map(|a| a.trim().to_lowercase());
            if given.as_deref() != Some(word.as_str()) {
                return Err(Error::BackupMismatch {
                    position: *position,
                });
            }
        }
        if answers.len() != self.words.len() {
            return Err(Error::BackupMismatch {
                position: self.words.last().map_or(0, |(p, _)| *p),
            });
        }
        Ok(())
    }
}

impl Profile {
    /// Checks the words typed back and, when they match, records the backup as confirmed.
    pub fn confirm_backup(&self, check: &BackupCheck, answers: &[String]) -> Result<()> {
        check.verify(answers)?;
        self.store.set_setting(BACKUP_CONFIRMED, "1")
    }

    /// Whether the person proved they wrote the phrase down (restored phrases count as
    /// written down: they were typed in).
    pub fn backup_confirmed(&self) -> Result<bool> {
        Ok(self.store.setting(BACKUP_CONFIRMED)?.as_deref() == Some("1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn the_words_at_the_asked_positions_confirm_and_nothing_else() {
        let phrase = RecoveryPhrase::generate(&mut OsRng);
        let check = BackupCheck::new(&phrase, &mut OsRng);
        let positions = check.positions();
        assert_eq!(positions.len(), WORDS_TO_CONFIRM);
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        let words = phrase.words();
        let right: Vec<String> = positions
            .iter()
            .map(|p| format!(" {} ", words[*p as usize - 1].to_uppercase()))
            .collect();
        check.verify(&right).unwrap();
        let mut wrong = right.clone();
        wrong[1] = "zebra-not-a-word".into();
        match check.verify(&wrong) {
            Err(Error::BackupMismatch { position }) => assert_eq!(position, positions[1]),
            other => panic!("{other:?}"),
        }
        assert!(check.verify(&right[..2]).is_err());
        assert!(!format!("{check:?}").contains(words[positions[0] as usize - 1]));
    }
}
