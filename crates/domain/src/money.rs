//! Money, KIE credits and exact rates.
//!
//! Balances are integers of the operator's minor unit (kopecks by default).
//! KIE prices are fractional credits (0.8, 6.5, 9.5 per second), kept as
//! thousandths so that every catalog price is exact. Rates (FX, markup, USD per
//! credit) are fixed-point millionths. Conversions between them use integer
//! arithmetic only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Minor units per major unit of the operator's currency (kopecks per ruble).
pub const MINOR_PER_MAJOR: i64 = 100;

/// An amount of the operator's currency in minor units. May be negative only
/// as a signed adjustment; balances themselves never go below zero (the
/// database enforces it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

/// Arithmetic or parsing that would produce a meaningless amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The result does not fit in 64 bits.
    #[error("amount overflows")]
    Overflow,
    /// Text that is not an amount like `12`, `12.5` or `12.50`.
    #[error("{0:?} is not an amount (expected digits with at most two decimals)")]
    Invalid(String),
    /// A zero or negative amount where a positive one is required.
    #[error("amount must be positive")]
    NotPositive,
}

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// An amount from minor units.
    pub const fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    /// The amount in minor units.
    pub const fn minor(self) -> i64 {
        self.0
    }

    /// A strictly positive amount, or [`MoneyError::NotPositive`].
    pub fn positive(minor: i64) -> Result<Self, MoneyError> {
        if minor > 0 {
            Ok(Money(minor))
        } else {
            Err(MoneyError::NotPositive)
        }
    }

    /// Whether the amount is above zero.
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Checked addition.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Money)
            .ok_or(MoneyError::Overflow)
    }

    /// Checked subtraction.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Money)
            .ok_or(MoneyError::Overflow)
    }

    /// Checked multiplication by a count.
    pub fn checked_mul(self, n: i64) -> Result<Money, MoneyError> {
        self.0.checked_mul(n).map(Money).ok_or(MoneyError::Overflow)
    }
}

impl fmt::Display for Money {
    /// `12.50`, `-0.05`: two decimals, no currency sign (texts add it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = MINOR_PER_MAJOR as u64;
        write!(f, "{sign}{}.{:02}", abs / per, abs % per)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    /// Parses `12`, `12.5`, `12.50` or `-3.10` (a comma works as the decimal
    /// separator too, as Russian users type it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || MoneyError::Invalid(s.to_owned());
        let t = s.trim().replace(',', ".");
        let (neg, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest.to_owned()),
            None => (false, t),
        };
        let (int, frac) = t.split_once('.').unwrap_or((&t, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let major: i64 = int.parse().map_err(|_| invalid())?;
        let mut minor_part: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| invalid())?
        };
        if frac.len() == 1 {
            minor_part *= 10;
        }
        let v = major
            .checked_mul(MINOR_PER_MAJOR)
            .and_then(|m| m.checked_add(minor_part))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money(if neg { -v } else { v }))
    }
}

/// KIE credits in thousandths of a credit (0.8 credits = 800).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct Credits(i64);

impl Credits {
    /// Credits from thousandths.
    pub const fn from_milli(milli: i64) -> Self {
        Credits(milli)
    }

    /// Whole credits.
    pub const fn whole(n: i64) -> Self {
        Credits(n * 1000)
    }

    /// Thousandths of a credit.
    pub const fn milli(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = (self.0 % 1000).abs();
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:03}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

impl<'de> Deserialize<'de> for Credits {
    /// Accepts a number (`0.8`, `18`) or a decimal string (`"0.8"`). A value
    /// finer than a thousandth of a credit or negative is rejected rather than
    /// rounded: a catalog price must be exactly what the operator wrote.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Str(String),
        }
        let milli = match Raw::deserialize(d)? {
            Raw::Int(i) => i.checked_mul(1000),
            Raw::Float(x) => {
                let scaled = x * 1000.0;
                if x.is_finite() && (scaled - scaled.round()).abs() < 1e-6 && scaled.abs() < 9e15 {
                    Some(scaled.round() as i64)
                } else {
                    None
                }
            }
            Raw::Str(s) => Rate::from_str(&s).ok().and_then(|r| {
                if r.micros() % 1000 == 0 {
                    Some(r.micros() / 1000)
                } else {
                    None
                }
            }),
        };
        match milli {
            Some(m) if m >= 0 => Ok(Credits(m)),
            Some(_) => Err(serde::de::Error::custom("credits must not be negative")),
            None => Err(serde::de::Error::custom(
                "credits must be a decimal with at most 3 places",
            )),
        }
    }
}

/// An exact non-negative decimal rate in millionths (78.57 = 78_570_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate(i64);

impl Rate {
    /// A rate from millionths.
    pub const fn from_micros(micros: i64) -> Self {
        Rate(micros)
    }

    /// The rate in millionths.
    pub const fn micros(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000;
        let frac = self.0 % 1_000_000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:06}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

/// Text that is not a non-negative decimal with at most six places.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a non-negative decimal with at most 6 places")]
pub struct InvalidRate(pub String);

impl FromStr for Rate {
    type Err = InvalidRate;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidRate(s.to_owned());
        let t = s.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let whole: i64 = int.parse().map_err(|_| invalid())?;
        let mut micros: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| invalid())?
        };
        for _ in frac.len()..6 {
            micros *= 10;
        }
        whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(micros))
            .map(Rate)
            .ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_and_prints_two_decimals() {
        assert_eq!("12".parse::<Money>().unwrap(), Money::from_minor(1200));
        assert_eq!("12.5".parse::<Money>().unwrap(), Money::from_minor(1250));
        assert_eq!("0,05".parse::<Money>().unwrap(), Money::from_minor(5));
        assert_eq!("-3.10".parse::<Money>().unwrap(), Money::from_minor(-310));
        assert_eq!(Money::from_minor(1250).to_string(), "12.50");
        assert_eq!(Money::from_minor(-5).to_string(), "-0.05");
        for bad in ["", "1.234", "abc", "1..2", "--1", ".5"] {
            assert!(bad.parse::<Money>().is_err(), "{bad}");
        }
    }

    #[test]
    fn credits_deserialize_exactly() {
        let c: Credits = serde_json::from_str("0.8").unwrap();
        assert_eq!(c.milli(), 800);
        let c: Credits = serde_json::from_str("\"9.5\"").unwrap();
        assert_eq!(c.milli(), 9500);
        assert_eq!(c.to_string(), "9.5");
        assert!(serde_json::from_str::<Credits>("-1").is_err());
        assert!(serde_json::from_str::<Credits>("0.0001").is_err());
    }

    #[test]
    fn rates_parse_exactly() {
        assert_eq!("78.57".parse::<Rate>().unwrap().micros(), 78_570_000);
        assert_eq!("0.005".parse::<Rate>().unwrap().micros(), 5_000);
        assert_eq!("2".parse::<Rate>().unwrap().to_string(), "2");
        assert!("-1".parse::<Rate>().is_err());
        assert!("1.0000001".parse::<Rate>().is_err());
    }
}
