//! The simulation's entry point in CI.

#[test]
fn random_seeds() {
    super::run_from_env();
}
