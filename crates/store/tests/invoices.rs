//! Stars invoices and flagged payments: an invoice is found only by its
//! exact payload, and a flagged payment is credited once like any other.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use kiebot_domain::{Money, UserId};
use kiebot_store::{StarsCredit, Store, invoices};

on_both_engines!(
    an_invoice_is_found_by_its_exact_payload_only,
    a_flagged_payment_is_credited_once_and_listed_for_the_operator,
);

async fn an_invoice_is_found_by_its_exact_payload_only(store: Store) {
    let user = UserId(7);
    let inv = store
        .invoices()
        .create(user, 100, Money::from_minor(15_000), 60_000, 0xfeed)
        .await
        .unwrap();
    assert_eq!(inv.payload, invoices::payload_of(inv.id, 0xfeed));
    let found = store.invoices().by_payload(&inv.payload).await.unwrap();
    assert_eq!(found.as_ref(), Some(&inv));
    assert!(!inv.expired(inv.created_at));
    assert!(inv.expired(inv.expires_at));
    // The same id with another nonce is no invoice of ours.
    let forged = invoices::payload_of(inv.id, 0xbeef);
    assert_eq!(store.invoices().by_payload(&forged).await.unwrap(), None);
    assert_eq!(
        store.invoices().by_payload("free money").await.unwrap(),
        None
    );
    // Bad input changes nothing.
    assert!(
        store
            .invoices()
            .create(user, 0, Money::from_minor(1), 60_000, 1)
            .await
            .is_err()
    );
}

async fn a_flagged_payment_is_credited_once_and_listed_for_the_operator(store: Store) {
    let c = StarsCredit {
        user: UserId(8),
        charge_id: "ch-8",
        stars: 10,
        amount: Money::from_minor(1_500),
        payload: "who knows",
        flag: Some("unknown_invoice"),
    };
    assert!(store.payments().credit_stars(&c).await.unwrap().fresh);
    assert!(!store.payments().credit_stars(&c).await.unwrap().fresh);
    assert_eq!(
        common::wallet(&store, UserId(8)).await,
        (1_500, 0),
        "credited once"
    );
    let flagged = store.payments().flagged(10).await.unwrap();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].flag.as_deref(), Some("unknown_invoice"));
    store
        .payments()
        .set_flag("ch-8", "refunded_outside_spent")
        .await
        .unwrap();
    assert_eq!(
        store
            .payments()
            .get("ch-8")
            .await
            .unwrap()
            .unwrap()
            .flag
            .as_deref(),
        Some("refunded_outside_spent")
    );
    assert!(store.payments().set_flag("nope", "x").await.is_err());
    assert!(store.ledger().check().await.unwrap().is_empty());
}
