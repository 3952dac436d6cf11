//! End-to-end scenarios across kiebot's processes live in `tests/`: a scripted
//! Telegram user buys generations through the front bot while separate
//! workers generate and deliver them, on the embedded and the fleet layouts.
