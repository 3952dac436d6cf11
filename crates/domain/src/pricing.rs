//! The operator's price formula.
//!
//! price = KIE credits x USD per credit x FX (currency per USD) x markup,
//! rounded up to the minor unit. All factors are exact integers (credits in
//! thousandths, rates in millionths) and the product is taken in `i128`, so a
//! price is the same on every machine and never loses the operator's margin to
//! rounding.

use std::collections::BTreeMap;

use crate::catalog::{FieldKind, Model, PriceRule};
use crate::money::{MINOR_PER_MAJOR, Money, Rate};
use crate::params::{ParamValue, Params};

/// The operator's conversion from KIE credits to their currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// USD per KIE credit (KIE documents 0.005).
    pub usd_per_credit: Rate,
    /// Operator currency per USD.
    pub fx: Rate,
    /// Multiplier on KIE's cost (2 = 100% margin).
    pub markup: Rate,
}

impl Default for Pricing {
    /// 0.005 USD per credit, 78.57 RUB per USD, markup 2.
    fn default() -> Self {
        Pricing {
            usd_per_credit: Rate::from_micros(5_000),
            fx: Rate::from_micros(78_570_000),
            markup: Rate::from_micros(2_000_000),
        }
    }
}

/// Why a price cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The model has no price rule or is inactive.
    #[error("model {0} is not sold")]
    NotSold(String),
    /// A price-driving parameter is missing or not a number.
    #[error("model {model}: price needs a whole-number value for {field}")]
    MissingDriver {
        /// The model.
        model: String,
        /// The field.
        field: String,
    },
    /// No table row and no base credits for these parameters.
    #[error("model {model}: no price for {key}")]
    NoRow {
        /// The model.
        model: String,
        /// The `by` key looked up.
        key: String,
    },
    /// Absurd parameters (the product overflows).
    #[error("model {0}: price overflows")]
    Overflow(String),
}

/// KIE credits for one generation as an exact fraction `num / den` of
/// thousandths of a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditCost {
    /// Numerator, thousandths of a credit.
    pub milli_num: i128,
    /// Denominator (product of `divide_by` values).
    pub den: i128,
}

impl CreditCost {
    /// The cost rounded up to whole thousandths of a credit.
    pub fn milli_ceil(self) -> i64 {
        i64::try_from(div_ceil(self.milli_num, self.den)).unwrap_or(i64::MAX)
    }
}

impl Pricing {
    /// The KIE cost of a generation with these parameters.
    pub fn credits(&self, model: &Model, params: &Params) -> Result<CreditCost, PriceError> {
        let rule = rule(model)?;
        credits_for(model, rule, params)
    }

    /// The user's price for a generation with these parameters.
    pub fn price(&self, model: &Model, params: &Params) -> Result<Money, PriceError> {
        let rule = rule(model)?;
        if rule.free {
            return Ok(Money::ZERO);
        }
        let key = by_key(model, rule, params)?;
        if let Some(minor) = rule
            .minor_override
            .get(&key)
            .or_else(|| rule.minor_override.get("*"))
        {
            return Ok(Money::from_minor(*minor));
        }
        let cost = credits_for(model, rule, params)?;
        self.convert(model, cost)
    }

    /// The price of the model's defaults for each price-driving combination
    /// is what menus show; this is the plain conversion.
    fn convert(&self, model: &Model, cost: CreditCost) -> Result<Money, PriceError> {
        let overflow = || PriceError::Overflow(model.id.to_string());
        let num = cost
            .milli_num
            .checked_mul(i128::from(self.usd_per_credit.micros()))
            .and_then(|v| v.checked_mul(i128::from(self.fx.micros())))
            .and_then(|v| v.checked_mul(i128::from(self.markup.micros())))
            .and_then(|v| v.checked_mul(i128::from(MINOR_PER_MAJOR)))
            .ok_or_else(overflow)?;
        // thousandths of a credit x three rates in millionths
        let den = cost
            .den
            .checked_mul(1_000 * 1_000_000_000_000_000_000)
            .ok_or_else(overflow)?;
        i64::try_from(div_ceil(num, den))
            .map(Money::from_minor)
            .map_err(|_| overflow())
    }
}

fn rule(model: &Model) -> Result<&PriceRule, PriceError> {
    match &model.price {
        Some(r) if model.active => Ok(r),
        _ => Err(PriceError::NotSold(model.id.to_string())),
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    // Both are non-negative here; `checked_div` guards a zero denominator,
    // which the catalog loader already rules out.
    let q = a.checked_div(b).unwrap_or(0);
    if q * b < a { q + 1 } else { q }
}

fn by_key(model: &Model, rule: &PriceRule, params: &Params) -> Result<String, PriceError> {
    let mut parts = Vec::with_capacity(rule.by.len());
    for name in &rule.by {
        let v = match params.get(name) {
            Some(ParamValue::Choice(c)) => c.clone(),
            Some(ParamValue::Bool(b)) => b.to_string(),
            _ => {
                return Err(PriceError::MissingDriver {
                    model: model.id.to_string(),
                    field: name.clone(),
                });
            }
        };
        parts.push(v);
    }
    Ok(parts.join("|"))
}

fn driver(model: &Model, params: &Params, name: &str) -> Result<i128, PriceError> {
    let missing = || PriceError::MissingDriver {
        model: model.id.to_string(),
        field: name.to_owned(),
    };
    let v = match (model.field(name).map(|f| &f.kind), params.get(name)) {
        (Some(FieldKind::Integer { .. }), Some(ParamValue::Int(i))) if *i >= 0 => i128::from(*i),
        (Some(FieldKind::Enum { .. }), Some(ParamValue::Choice(c))) => {
            c.parse::<u32>().map_err(|_| missing())?.into()
        }
        _ => return Err(missing()),
    };
    Ok(v)
}

fn credits_for(model: &Model, rule: &PriceRule, params: &Params) -> Result<CreditCost, PriceError> {
    let key = by_key(model, rule, params)?;
    let per_unit = rule
        .table
        .get(&key)
        .copied()
        .or(rule.credits)
        .ok_or_else(|| PriceError::NoRow {
            model: model.id.to_string(),
            key: key.clone(),
        })?;
    let overflow = || PriceError::Overflow(model.id.to_string());
    let mut num = i128::from(per_unit.milli()) * i128::from(rule.units);
    for name in &rule.multiply_by {
        num = num
            .checked_mul(driver(model, params, name)?)
            .ok_or_else(overflow)?;
    }
    let mut den: i128 = 1;
    for name in &rule.divide_by {
        let d = driver(model, params, name)?;
        if d == 0 {
            return Err(PriceError::MissingDriver {
                model: model.id.to_string(),
                field: name.clone(),
            });
        }
        den = den.checked_mul(d).ok_or_else(overflow)?;
    }
    Ok(CreditCost {
        milli_num: num,
        den,
    })
}

/// The price of every price-driving combination with other fields at their
/// defaults, keyed like the price table. Used by `kiebot catalog` and tests.
pub fn price_list(pricing: &Pricing, model: &Model) -> BTreeMap<String, Result<Money, PriceError>> {
    let by = model.price.as_ref().map_or(&[][..], |p| p.by.as_slice());
    crate::catalog::price_combinations(model)
        .into_iter()
        .map(|combo| {
            // Join in `by` order, as the table is keyed, not in the map's
            // alphabetical order.
            let key = by
                .iter()
                .filter_map(|name| combo.get(name))
                .map(|v| match v {
                    ParamValue::Choice(c) => c.clone(),
                    ParamValue::Bool(b) => b.to_string(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join("|");
            let params = Params::for_pricing(model, &combo);
            (key, pricing.price(model, &params))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use proptest::prelude::*;

    fn model(price: serde_json::Value, extra_fields: serde_json::Value) -> Model {
        let mut fields = vec![
            serde_json::json!({"name": "prompt", "type": "string", "max_len": 100, "required": true}),
        ];
        if let serde_json::Value::Array(more) = extra_fields {
            fields.extend(more);
        }
        let m: Model = serde_json::from_value(serde_json::json!({
            "id": "t/m", "category": "image", "types": ["text-to-image"],
            "name": {"en": "T", "ru": "Т"}, "description": {"en": "", "ru": ""},
            "output": "image", "deadline_secs": 600, "fields": fields, "price": price
        }))
        .unwrap();
        Catalog::new(vec![m.clone()]).unwrap();
        m
    }

    fn price_of(m: &Model, pairs: &[(&str, ParamValue)]) -> Money {
        let combo = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Pricing::default()
            .price(m, &Params::for_pricing(m, &combo))
            .unwrap()
    }

    #[test]
    fn worked_examples_round_up_to_the_kopeck() {
        // 0.8 credits x 0.005 x 78.57 x 2 = 0.62856 RUB -> 0.63
        let m = model(serde_json::json!({"credits": 0.8}), serde_json::json!([]));
        assert_eq!(price_of(&m, &[]), Money::from_minor(63));
        // 18 credits -> 14.1426 -> 14.15; 24 -> 18.8568 -> 18.86
        let m = model(
            serde_json::json!({"by": ["resolution"], "table": {"1K": 18, "2K": 18, "4K": 24}}),
            serde_json::json!([{"name": "resolution", "type": "enum", "values": ["1K", "2K", "4K"], "default": "1K"}]),
        );
        assert_eq!(price_of(&m, &[]), Money::from_minor(1415));
        assert_eq!(
            price_of(&m, &[("resolution", ParamValue::Choice("4K".into()))]),
            Money::from_minor(1886)
        );
    }

    #[test]
    fn per_second_and_per_image_rules_multiply() {
        let m = model(
            serde_json::json!({"by": ["resolution"], "table": {"720p": 12, "1080p": 20}, "multiply_by": ["duration"]}),
            serde_json::json!([
                {"name": "resolution", "type": "enum", "values": ["720p", "1080p"], "default": "720p"},
                {"name": "duration", "type": "enum", "values": ["5", "10"], "default": "5"}
            ]),
        );
        // 60 credits = 0.3 USD = 23.571 RUB x2 = 47.142 -> 47.15
        assert_eq!(price_of(&m, &[]), Money::from_minor(4715));
        let ten = price_of(&m, &[("duration", ParamValue::Choice("10".into()))]);
        assert_eq!(ten, Money::from_minor(9429)); // 120 credits -> 94.284 -> 94.29
    }

    #[test]
    fn frames_over_fps_give_seconds() {
        let m = model(
            serde_json::json!({"credits": 12, "multiply_by": ["num_frames"], "divide_by": ["frames_per_second"]}),
            serde_json::json!([
                {"name": "num_frames", "type": "integer", "min": 40, "max": 120, "default": 80},
                {"name": "frames_per_second", "type": "integer", "min": 4, "max": 60, "default": 16}
            ]),
        );
        // 12 x 80 / 16 = 60 credits -> 47.15
        assert_eq!(price_of(&m, &[]), Money::from_minor(4715));
    }

    #[test]
    fn free_and_overridden_models() {
        let m = model(
            serde_json::json!({"credits": 1, "free": true}),
            serde_json::json!([]),
        );
        assert_eq!(price_of(&m, &[]), Money::ZERO);
        let m = model(
            serde_json::json!({"credits": 1, "minor_override": {"*": 990}}),
            serde_json::json!([]),
        );
        assert_eq!(price_of(&m, &[]), Money::from_minor(990));
    }

    #[test]
    fn inactive_or_unpriced_models_are_not_sold() {
        let mut m = model(serde_json::json!({"credits": 1}), serde_json::json!([]));
        m.active = false;
        assert!(matches!(
            Pricing::default().price(&m, &Params::defaults_for_pricing(&m)),
            Err(PriceError::NotSold(_))
        ));
    }

    proptest! {
        // The price never undercuts KIE's cost converted exactly, and never
        // exceeds it by a whole minor unit or more.
        #[test]
        fn price_is_the_exact_cost_rounded_up(
            milli in 0i64..10_000_000,
            fx in 1i64..200_000_000,
            markup in 1_000_000i64..5_000_000,
        ) {
            let m = model(serde_json::json!({"credits": format!("{}.{:03}", milli / 1000, milli % 1000)}), serde_json::json!([]));
            let pricing = Pricing { usd_per_credit: Rate::from_micros(5_000), fx: Rate::from_micros(fx), markup: Rate::from_micros(markup) };
            let price = pricing.price(&m, &Params::defaults_for_pricing(&m)).unwrap().minor() as i128;
            let exact_num = milli as i128 * 5_000 * fx as i128 * markup as i128 * 100;
            let den: i128 = 1_000 * 1_000_000_000_000_000_000;
            prop_assert!(price * den >= exact_num);
            prop_assert!((price - 1) * den < exact_num);
        }

        #[test]
        fn price_is_monotonic_in_count(n in 1u32..4) {
            let m = model(
                serde_json::json!({"credits": 3.5, "multiply_by": ["num_images"]}),
                serde_json::json!([{"name": "num_images", "type": "enum", "values": ["1", "2", "3", "4"], "default": "1"}]),
            );
            let a = price_of(&m, &[("num_images", ParamValue::Choice(n.to_string()))]);
            let b = price_of(&m, &[("num_images", ParamValue::Choice((n + 1).to_string()))]);
            prop_assert!(b > a);
        }
    }
}
