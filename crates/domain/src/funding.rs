//! Who pays for a generation: the funding policy, as a pure decision.
//!
//! The confirm screen shows what this decides, and the confirmation carries
//! it to the store, which re-checks it in the confirm transaction (the quota
//! or the budget may have run out since the screen was shown).

use crate::Money;

/// The buyer, as far as paying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Buyer {
    /// The process runs without KIE (DRY_RUN): nothing is generated or
    /// charged.
    pub dry_run: bool,
    /// The owner never pays.
    pub owner: bool,
    /// A limited admin with a budget: the budget pays, not the balance.
    pub admin_budget: Option<Money>,
}

/// A model's daily free uses, and how many this buyer has used today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FreeUses {
    /// Free uses a day (0: none).
    pub daily: u32,
    /// Used today.
    pub used: u32,
}

/// How a generation is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Funding {
    /// Nothing to pay: a dry run, the owner, or a model priced at zero.
    Free(FreeBecause),
    /// One of today's free uses (taken in the confirm transaction, given back
    /// if the generation fails).
    FreeUse {
        /// Free uses a day.
        limit: u32,
    },
    /// The admin budget pays `amount`; `left` is what remains before it.
    AdminBudget {
        /// What the generation costs.
        amount: Money,
        /// The budget before this generation.
        left: Money,
    },
    /// The user's balance pays `price` (held at confirm, captured on
    /// success).
    Wallet {
        /// What the user pays.
        price: Money,
    },
}

/// Why a generation costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeBecause {
    /// DRY_RUN.
    DryRun,
    /// The owner.
    Owner,
    /// The model's price is zero.
    ZeroPrice,
}

impl Funding {
    /// What the user's balance pays (zero unless [`Funding::Wallet`]).
    pub fn wallet_price(&self) -> Money {
        match self {
            Funding::Wallet { price } => *price,
            _ => Money::ZERO,
        }
    }
}

/// Decides who pays `price` for `buyer`.
///
/// A free use comes before the budget, so the budget lasts longer. An admin
/// without a budget pays from their balance like any user. When the budget
/// runs short the confirmation is refused (by the store) rather than charged
/// to the admin's own balance: the budget is the operator's money for staff
/// work, and staff should not find their personal balance spent without
/// having chosen it.
pub fn decide(price: Money, buyer: Buyer, free: FreeUses) -> Funding {
    if buyer.dry_run {
        return Funding::Free(FreeBecause::DryRun);
    }
    if buyer.owner {
        return Funding::Free(FreeBecause::Owner);
    }
    if !price.is_positive() {
        return Funding::Free(FreeBecause::ZeroPrice);
    }
    if free.daily > 0 && free.used < free.daily {
        return Funding::FreeUse { limit: free.daily };
    }
    if let Some(left) = buyer.admin_budget {
        return Funding::AdminBudget {
            amount: price,
            left,
        };
    }
    Funding::Wallet { price }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Money = Money::from_minor(1_500);

    fn user() -> Buyer {
        Buyer::default()
    }

    #[test]
    fn a_user_pays_the_price_from_the_wallet() {
        assert_eq!(
            decide(PRICE, user(), FreeUses::default()),
            Funding::Wallet { price: PRICE }
        );
    }

    #[test]
    fn dry_run_and_the_owner_pay_nothing_whatever_else_holds() {
        let budget = Some(Money::from_minor(10));
        let free = FreeUses { daily: 3, used: 0 };
        let dry = Buyer {
            dry_run: true,
            owner: true,
            admin_budget: budget,
        };
        assert_eq!(decide(PRICE, dry, free), Funding::Free(FreeBecause::DryRun));
        let owner = Buyer {
            owner: true,
            admin_budget: budget,
            ..user()
        };
        assert_eq!(
            decide(PRICE, owner, free),
            Funding::Free(FreeBecause::Owner)
        );
    }

    #[test]
    fn a_zero_price_takes_no_free_use_and_no_budget() {
        let admin = Buyer {
            admin_budget: Some(Money::from_minor(100)),
            ..user()
        };
        let free = FreeUses { daily: 1, used: 0 };
        assert_eq!(
            decide(Money::ZERO, admin, free),
            Funding::Free(FreeBecause::ZeroPrice)
        );
    }

    #[test]
    fn a_free_use_is_taken_while_the_day_has_one() {
        for used in 0..3 {
            assert_eq!(
                decide(PRICE, user(), FreeUses { daily: 3, used }),
                Funding::FreeUse { limit: 3 },
                "used {used} of 3"
            );
        }
        assert_eq!(
            decide(PRICE, user(), FreeUses { daily: 3, used: 3 }),
            Funding::Wallet { price: PRICE }
        );
    }

    #[test]
    fn a_free_use_comes_before_the_budget_and_the_budget_before_the_wallet() {
        let left = Money::from_minor(100);
        let admin = Buyer {
            admin_budget: Some(left),
            ..user()
        };
        assert_eq!(
            decide(PRICE, admin, FreeUses { daily: 1, used: 0 }),
            Funding::FreeUse { limit: 1 }
        );
        // A budget smaller than the price is still the budget: the store
        // refuses the confirmation instead of charging the admin's balance.
        assert_eq!(
            decide(PRICE, admin, FreeUses { daily: 1, used: 1 }),
            Funding::AdminBudget {
                amount: PRICE,
                left
            }
        );
    }

    #[test]
    fn only_the_wallet_pays_from_the_balance() {
        let left = Money::from_minor(100);
        for f in [
            Funding::Free(FreeBecause::Owner),
            Funding::FreeUse { limit: 1 },
            Funding::AdminBudget {
                amount: PRICE,
                left,
            },
        ] {
            assert_eq!(f.wallet_price(), Money::ZERO);
        }
        assert_eq!(Funding::Wallet { price: PRICE }.wallet_price(), PRICE);
    }
}
