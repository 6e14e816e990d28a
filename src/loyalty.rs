//! The loyalty rules, with no Kubernetes client in sight: the level policy (checkLevel), the
//! score of a set of orders (countScore) and which state changes an order may make.
//!
//! The score is derived from the orders that exist rather than counted from events, so it is
//! the same after any crash, replay or restart.

use std::{fmt, str::FromStr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::{CustomerStatus, LedgerSpec, OrderState};

/// The level an order reports while its customer does not exist. Reserved: no policy may use it.
pub const MISSING_CUSTOMER_LEVEL: &str = "Iron";

/// The policy of the original service: a level every 5 points.
pub const DEFAULT_LEVELS: &str = "Bronze=0,Silver=5,Gold=10,Platinum=15,Diamond=20";

/// Maps a score to a level name. Each level applies from its threshold up to the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelPolicy {
    /// Non-empty, first threshold 0, thresholds strictly increasing, names unique.
    levels: Vec<(String, i64)>,
}

/// Why a `NAME=MIN,...` string is not a level policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the level policy is empty; expected NAME=MIN,... such as {DEFAULT_LEVELS}")]
    Empty,
    #[error("level {entry:?} is not of the form NAME=MIN")]
    NotNameEqualsMin { entry: String },
    #[error("level {entry:?} has an empty name")]
    EmptyName { entry: String },
    #[error("level name {name:?} may only contain letters, digits, '-' and '_'")]
    BadName { name: String },
    #[error(
        "level name {MISSING_CUSTOMER_LEVEL:?} is reserved for orders whose customer does not exist"
    )]
    ReservedName,
    #[error("level {name:?} has threshold {min:?}, which is not a whole number from 0 up")]
    BadThreshold { name: String, min: String },
    #[error("level {name:?} appears twice")]
    DuplicateName { name: String },
    #[error("the first level {name:?} must start at 0, not {min}")]
    FirstNotZero { name: String, min: i64 },
    #[error(
        "thresholds must increase: level {name:?}={min} comes after {previous:?}={previous_min}"
    )]
    NotIncreasing {
        name: String,
        min: i64,
        previous: String,
        previous_min: i64,
    },
}

impl LevelPolicy {
    /// Builds a policy from (name, threshold) pairs, checking every rule.
    pub fn new(levels: Vec<(String, i64)>) -> Result<Self, PolicyError> {
        let Some((first, first_min)) = levels.first() else {
            return Err(PolicyError::Empty);
        };
        if *first_min != 0 {
            return Err(PolicyError::FirstNotZero {
                name: first.clone(),
                min: *first_min,
            });
        }
        for (i, (name, min)) in levels.iter().enumerate() {
            if name.is_empty() {
                return Err(PolicyError::EmptyName {
                    entry: format!("={min}"),
                });
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(PolicyError::BadName { name: name.clone() });
            }
            if name == MISSING_CUSTOMER_LEVEL {
                return Err(PolicyError::ReservedName);
            }
            if levels[..i].iter().any(|(other, _)| other == name) {
                return Err(PolicyError::DuplicateName { name: name.clone() });
            }
            if let Some((previous, previous_min)) = i.checked_sub(1).map(|p| &levels[p])
                && min <= previous_min
            {
                return Err(PolicyError::NotIncreasing {
                    name: name.clone(),
                    min: *min,
                    previous: previous.clone(),
                    previous_min: *previous_min,
                });
            }
        }
        Ok(Self { levels })
    }

    /// The level for `score`: the last level whose threshold is at most the score. Scores below
    /// zero cannot happen (quantities are positive) and get the first level.
    pub fn level_for(&self, score: i64) -> &str {
        let at = self.levels.partition_point(|(_, min)| *min <= score);
        &self.levels[at.saturating_sub(1)].0
    }

    /// Level names, lowest first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().map(|(name, _)| name.as_str())
    }
}

impl Default for LevelPolicy {
    fn default() -> Self {
        DEFAULT_LEVELS.parse().expect("the default policy is valid")
    }
}

impl FromStr for LevelPolicy {
    type Err = PolicyError;

    /// Parses `NAME=MIN,NAME=MIN,...`; white space around names and numbers is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(PolicyError::Empty);
        }
        let levels = s
            .split(',')
            .map(|entry| {
                let (name, min) =
                    entry
                        .split_once('=')
                        .ok_or_else(|| PolicyError::NotNameEqualsMin {
                            entry: entry.trim().to_owned(),
                        })?;
                let name = name.trim();
                if name.is_empty() {
                    return Err(PolicyError::EmptyName {
                        entry: entry.trim().to_owned(),
                    });
                }
                let min_text = min.trim();
                let min = min_text
                    .parse::<i64>()
                    .ok()
                    .filter(|min| *min >= 0)
                    .ok_or_else(|| PolicyError::BadThreshold {
                        name: name.to_owned(),
                        min: min_text.to_owned(),
                    })?;
                Ok((name.to_owned(), min))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(levels)
    }
}

impl fmt::Display for LevelPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (name, min) in &self.levels {
            write!(f, "{sep}{name}={min}")?;
            sep = ",";
        }
        Ok(())
    }
}

/// The score and counts of one customer's orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Sum of quantities of completed orders.
    pub score: i64,
    pub completed: i64,
    pub canceled: i64,
    /// Requested orders.
    pub open: i64,
}

impl Tally {
    /// Counts one order by its state (what the user declared in `spec.state`, whose transitions
    /// the API server enforces) and quantity.
    pub fn count(&mut self, state: OrderState, quantity: i64) {
        match state {
            OrderState::Completed => {
                self.completed += 1;
                self.score += quantity;
            }
            OrderState::Canceled => self.canceled += 1,
            OrderState::Requested => self.open += 1,
        }
    }

    /// The tally of a set of orders, given as (state, quantity).
    pub fn of(orders: impl IntoIterator<Item = (OrderState, i64)>) -> Self {
        let mut tally = Self::default();
        for (state, quantity) in orders {
            tally.count(state, quantity);
        }
        tally
    }

    /// What a Ledger says its settled orders add up to (absorbed ones among them).
    pub fn settled_in(ledger: &LedgerSpec) -> Self {
        Tally {
            score: ledger.score,
            completed: ledger.completed_orders,
            canceled: ledger.canceled_orders,
            open: 0,
        }
    }

    /// This tally and `other` together.
    pub fn plus(self, other: Tally) -> Tally {
        Tally {
            score: self.score + other.score,
            completed: self.completed + other.completed,
            canceled: self.canceled + other.canceled,
            open: self.open + other.open,
        }
    }

    /// This tally without `other`.
    pub fn minus(self, other: Tally) -> Tally {
        Tally {
            score: self.score - other.score,
            completed: self.completed - other.completed,
            canceled: self.canceled - other.canceled,
            open: self.open - other.open,
        }
    }
}

/// Where a customer stands: the tally, the level it gives, and what is left to the next level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub score: i64,
    pub level: String,
    /// The next level of the policy; None at the top.
    pub next_level: Option<String>,
    /// Score still needed for `next_level`; None at the top.
    pub points_to_next_level: Option<i64>,
    pub completed: i64,
    pub canceled: i64,
    pub open: i64,
}

impl Standing {
    /// The status that shows this standing, computed for `generation`, with `conditions`.
    pub fn status(self, generation: Option<i64>, conditions: Vec<Condition>) -> CustomerStatus {
        CustomerStatus {
            score: self.score,
            level: Some(self.level),
            next_level: self.next_level,
            points_to_next_level: self.points_to_next_level,
            completed_orders: self.completed,
            canceled_orders: self.canceled,
            open_orders: self.open,
            settled: None,
            observed_generation: generation,
            conditions,
        }
    }

    /// The standing `status` shows (None before the operator wrote a level).
    pub fn shown_by(status: &CustomerStatus) -> Option<Standing> {
        Some(Standing {
            score: status.score,
            level: status.level.clone()?,
            next_level: status.next_level.clone(),
            points_to_next_level: status.points_to_next_level,
            completed: status.completed_orders,
            canceled: status.canceled_orders,
            open: status.open_orders,
        })
    }
}

impl LevelPolicy {
    /// The level above the one `score` gives, with its threshold; None at the top level.
    pub fn next_level(&self, score: i64) -> Option<(&str, i64)> {
        let at = self.levels.partition_point(|(_, min)| *min <= score);
        self.levels.get(at).map(|(name, min)| (name.as_str(), *min))
    }

    /// The standing a tally gives under this policy.
    pub fn standing(&self, tally: &Tally) -> Standing {
        let next = self.next_level(tally.score);
        Standing {
            score: tally.score,
            level: self.level_for(tally.score).to_owned(),
            next_level: next.map(|(name, _)| name.to_owned()),
            points_to_next_level: next.map(|(_, min)| min - tally.score),
            completed: tally.completed,
            canceled: tally.canceled,
            open: tally.open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn default_policy_steps_every_five_points() {
        let policy = LevelPolicy::default();
        let expect = [
            (0, "Bronze"),
            (4, "Bronze"),
            (5, "Silver"),
            (9, "Silver"),
            (10, "Gold"),
            (14, "Gold"),
            (15, "Platinum"),
            (19, "Platinum"),
            (20, "Diamond"),
            (1_000_000, "Diamond"),
        ];
        for (score, level) in expect {
            assert_eq!(policy.level_for(score), level, "score {score}");
        }
        assert_eq!(policy.to_string(), DEFAULT_LEVELS);
    }

    #[test]
    fn custom_policy_parses_with_spaces() {
        let policy: LevelPolicy = " Regular = 0 , VIP=100".parse().unwrap();
        assert_eq!(policy.level_for(99), "Regular");
        assert_eq!(policy.level_for(100), "VIP");
        assert_eq!(policy.names().collect::<Vec<_>>(), ["Regular", "VIP"]);
    }

    #[test]
    fn single_level_policy_is_valid() {
        let policy: LevelPolicy = "Member=0".parse().unwrap();
        assert_eq!(policy.level_for(12345), "Member");
    }

    #[test]
    fn bad_policies_name_the_problem() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("Bronze", "\"Bronze\" is not of the form NAME=MIN"),
            ("=0,Silver=5", "empty name"),
            (
                "Bronze=0,Silver=five",
                "level \"Silver\" has threshold \"five\"",
            ),
            (
                "Bronze=0,Silver=-5",
                "level \"Silver\" has threshold \"-5\"",
            ),
            ("Bronze=0,Bronze=5", "level \"Bronze\" appears twice"),
            (
                "Bronze=1,Silver=5",
                "the first level \"Bronze\" must start at 0, not 1",
            ),
            (
                "Bronze=0,Silver=5,Gold=5",
                "level \"Gold\"=5 comes after \"Silver\"=5",
            ),
            (
                "Bronze=0,Silver=10,Gold=5",
                "level \"Gold\"=5 comes after \"Silver\"=10",
            ),
            ("Iron=0,Gold=5", "\"Iron\" is reserved"),
            ("Bronze=0,Sil ver=5", "\"Sil ver\" may only contain"),
            ("Bronze=0,,Gold=5", "\"\" is not of the form NAME=MIN"),
        ];
        for (input, want) in cases {
            let err = input.parse::<LevelPolicy>().expect_err(input).to_string();
            assert!(
                err.contains(want),
                "{input:?}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn transitions_follow_the_contract() {
        use OrderState::*;
        let allowed = [
            (Requested, Requested),
            (Requested, Completed),
            (Requested, Canceled),
            (Completed, Completed),
            (Completed, Canceled),
            (Canceled, Canceled),
        ];
        for from in OrderState::ALL {
            for to in OrderState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn tally_counts_only_completed_orders_in_the_score() {
        use OrderState::*;
        let tally = Tally::of([
            (Completed, 3),
            (Canceled, 7),
            (Requested, 11),
            (Requested, 13),
            (Completed, 2),
        ]);
        assert_eq!(
            tally,
            Tally {
                score: 5,
                completed: 2,
                canceled: 1,
                open: 2
            }
        );
    }

    #[test]
    fn standing_names_the_next_level_and_the_points_to_it() {
        let policy = LevelPolicy::default();
        let standing = |score| {
            policy.standing(&Tally {
                score,
                completed: 1,
                ..Tally::default()
            })
        };
        let silver = standing(7);
        assert_eq!(silver.level, "Silver");
        assert_eq!(silver.next_level.as_deref(), Some("Gold"));
        assert_eq!(silver.points_to_next_level, Some(3));
        assert_eq!(standing(0).points_to_next_level, Some(5));
        assert_eq!(standing(19).next_level.as_deref(), Some("Diamond"));
        assert_eq!(standing(19).points_to_next_level, Some(1));
        let top = standing(20);
        assert_eq!(top.level, "Diamond");
        assert_eq!((top.next_level, top.points_to_next_level), (None, None));
    }

    fn state() -> impl Strategy<Value = OrderState> {
        prop::sample::select(OrderState::ALL.to_vec())
    }

    proptest! {
        /// Whatever the order in which transitions arrive (and however often each is replayed),
        /// applying only allowed ones and tallying the final phases gives the sum over the
        /// orders that ended Completed: the score is a function of state, not of history.
        #[test]
        fn score_is_the_sum_over_completed_orders_whatever_the_event_order(
            orders in prop::collection::vec((1i64..=1000, state(), state()), 0..40),
            seed in any::<u64>(),
        ) {
            // Each order sees its two target states, each delivered once or twice, interleaved
            // with the other orders' events in a seed-dependent order.
            let mut events: Vec<(usize, OrderState)> = orders
                .iter()
                .enumerate()
                .flat_map(|(i, (_, a, b))| [(i, *a), (i, *b), (i, *b)])
                .collect();
            let mut rng = seed;
            for i in (1..events.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                events.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let mut phases: HashMap<usize, OrderState> = HashMap::new();
            for (i, next) in events {
                let phase = phases.entry(i).or_insert(OrderState::Requested);
                if phase.can_become(next) {
                    *phase = next;
                }
            }
            let tally = Tally::of(orders.iter().enumerate().map(|(i, (qty, _, _))| (phases.get(&i).copied().unwrap_or(OrderState::Requested), *qty)));
            let expected: i64 = orders
                .iter()
                .enumerate()
                .filter(|(i, _)| phases.get(i) == Some(&OrderState::Completed))
                .map(|(_, (qty, _, _))| qty)
                .sum();
            prop_assert_eq!(tally.score, expected);
            prop_assert_eq!(tally.completed + tally.canceled + tally.open, orders.len() as i64);
            prop_assert!(tally.score >= 0);
        }

        /// The tally does not depend on the order the orders are listed in.
        #[test]
        fn tally_ignores_listing_order(mut orders in prop::collection::vec((state(), 1i64..=1000), 0..50)) {
            let forward = Tally::of(orders.clone());
            orders.reverse();
            prop_assert_eq!(forward, Tally::of(orders));
        }

        /// A higher score never gives a lower level, for any valid policy.
        #[test]
        fn level_is_monotone_in_score(
            steps in prop::collection::vec(1i64..50, 0..6),
            a in 0i64..500,
            b in 0i64..500,
        ) {
            let mut min = 0;
            let mut levels = vec![("L0".to_owned(), 0)];
            for (i, step) in steps.iter().enumerate() {
                min += step;
                levels.push((format!("L{}", i + 1), min));
            }
            let policy = LevelPolicy::new(levels).unwrap();
            let rank = |score| policy.names().position(|n| n == policy.level_for(score)).unwrap();
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(rank(low) <= rank(high));
        }

        /// Arbitrary bytes (as the environment may hand them over) never make the parser panic.
        #[test]
        fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let input = String::from_utf8_lossy(&bytes);
            let _ = input.parse::<LevelPolicy>();
        }

        /// Any string either parses into a policy that obeys every rule (and prints back to an
        /// equal policy), or gives an error; it never panics.
        #[test]
        fn every_policy_string_parses_or_errs(input in "\\PC{0,40}|([A-Za-z]{0,6}=[0-9-]{0,3},?){0,5}") {
            if let Ok(policy) = input.parse::<LevelPolicy>() {
                let names: Vec<_> = policy.names().collect();
                prop_assert!(!names.is_empty());
                prop_assert_eq!(policy.level_for(0), names[0]);
                prop_assert_eq!(policy.to_string().parse::<LevelPolicy>().unwrap(), policy);
            }
        }
    }
}
