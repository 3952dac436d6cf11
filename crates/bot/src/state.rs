//! The dialogue: what the bot is waiting for from one user, stored as JSON in
//! `store.dialogues()` so it survives restarts and works across bot
//! processes. An unreadable or expired state is the idle state.

use std::collections::BTreeMap;

use kiebot_domain::{GenerationId, Money, ParamValue, UserId};
use kiebot_store::{Funding, now_ms};
use kiebot_tg::callback::DraftId;
use serde::{Deserialize, Serialize};

use crate::{Ctx, DIALOGUE_TTL};

/// What the bot waits for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "snake_case")]
pub(crate) enum Dialogue {
    /// Nothing: menus and commands only.
    #[default]
    Idle,
    /// Filling in a generation.
    Wizard(Draft),
    /// A custom number of Stars to buy.
    StarsAmount,
    /// Idle, remembering the last confirmed draft so a second tap on its
    /// confirm button gets "already started" instead of "out of date".
    Confirmed {
        /// The draft that was confirmed.
        draft: DraftId,
        /// The generation it created.
        generation: GenerationId,
    },
}

impl Dialogue {
    /// The field of a serialized [`Dialogue::Confirmed`] that holds the
    /// generation id (filled in by the confirm transaction).
    pub const CONFIRMED_GENERATION_FIELD: &'static str = "generation";
}

/// A generation being put together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Draft {
    /// Keys the confirm button and the generation (`draft_key`).
    pub id: DraftId,
    /// The model id.
    pub model: kiebot_domain::ModelId,
    /// The values given so far (defaults are not stored: they fill in at
    /// validation).
    pub values: BTreeMap<String, ParamValue>,
    /// Field names of the steps, in order.
    pub steps: Vec<String>,
    /// The current step; `steps.len()` is the confirm screen.
    pub pos: usize,
    /// Whether the advanced options were added to `steps`.
    pub advanced: bool,
    /// What the confirm screen showed under this draft id, if it was shown.
    /// Confirm charges only this: a different price or funding at confirm
    /// time shows the screen again under a new id. One id never carries two
    /// quotes, so a button can only confirm the price printed above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// Where each uploaded file came from, by its KIE URL: KIE keeps uploads
    /// about a day, so a draft confirmed much later uploads them again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uploads: BTreeMap<String, Upload>,
}

/// A file of the draft on KIE's upload host, and the Telegram file it was
/// made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Upload {
    /// When it was uploaded (unix ms).
    pub at: i64,
    /// Telegram's file id, to fetch it again.
    pub file_id: String,
    /// Telegram's stable id of the file.
    pub unique_id: String,
    /// Its type.
    pub mime: String,
    /// Its name as sent.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What confirming a draft costs whom, as the confirm screen states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Quote {
    /// What the wallet holds (zero when something else pays).
    pub price: Money,
    /// Who else pays, taken in the confirm transaction.
    pub funding: Funding,
}

impl Quote {
    /// The price the confirm screen shows: what the wallet pays, or what
    /// the admin budget pays.
    pub fn shown(&self) -> Money {
        match &self.funding {
            Funding::AdminBudget { amount } => *amount,
            Funding::Wallet | Funding::FreeQuota { .. } => self.price,
        }
    }
}

impl Ctx {
    /// The user's dialogue (idle when none, expired or unreadable).
    pub fn dialogue(&self) -> Dialogue {
        self.dialogue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Saves the dialogue (idle clears it).
    pub async fn set_dialogue(&self, d: &Dialogue) -> anyhow::Result<()> {
        if *d == Dialogue::Idle {
            self.deps.store.dialogues().clear(self.uid).await?;
        } else {
            let json = serde_json::to_string(d)?;
            self.deps
                .store
                .dialogues()
                .save(self.uid, &json, now_ms(), DIALOGUE_TTL)
                .await?;
        }
        self.remember_dialogue(d.clone());
        Ok(())
    }

    /// Records what the database now holds as the dialogue (written by a
    /// store call that also did something else).
    pub fn remember_dialogue(&self, d: Dialogue) {
        *self.dialogue.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }
}

/// The dialogue stored as `raw` (idle when none or unreadable).
pub(crate) fn parse_dialogue(user: UserId, raw: Option<&str>) -> Dialogue {
    raw.and_then(|s| match serde_json::from_str(s) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(user = %user, error = %e, "unreadable dialogue dropped");
            None
        }
    })
    .unwrap_or_default()
}
