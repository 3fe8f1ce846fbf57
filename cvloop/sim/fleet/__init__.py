"""The synthetic fleet: scenes, frames and videos, the simulated serving fleet, the simulated
reviewer, scenario sets. Demo and tests only: no production module imports it."""
