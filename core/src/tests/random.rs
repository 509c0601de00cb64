//! A deterministic random walk over the driver.
