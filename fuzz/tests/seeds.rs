//! Every fuzz target over hand-written seeds and deterministic mutations of
//! them (bit flips, byte changes, cuts, splices, repeated and interesting
//! values), so `make test` catches a decoder that panics on input near
//! what it normally sees. Coverage-guided fuzzing is `make fuzz`.

use sluice_fuzz::{TARGETS, seeds};

/// Mutations per seed and target (the SCRAM target derives a key for
/// most inputs, so it gets fewer).
const ROUNDS: usize = 2000;
const SCRAM_ROUNDS: usize = 300;

/// A small deterministic generator (xorshift64*): the same inputs on
/// every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [&[u8]; 8] = [
    &[0, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x80, 0, 0, 0],
    &[0, 0, 0, 4],
    &[0, 0, 0, 8],
    &[0xff, 0xff],
    &[0],
];

fn mutate(rng: &mut Rng, seed: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(len + 1)),
            3 => {
                let i = rng.below(len + 1);
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let end = (i + value.len()).min(len);
                v.splice(i..end, value.iter().copied());
            }
            4 if len > 0 => {
                let (a, b) = (rng.below(len), rng.below(len));
                let (a, b) = (a.min(b), a.max(b));
                let copy = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, copy);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len() + 1);
                let at = rng.below(len + 1);
                v.truncate(at);
                v.extend_from_slice(&other[cut..]);
            }
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in TARGETS {
        assert!(!seeds(name).is_empty(), "{name}");
    }
}

#[test]
fn the_seeds_reach_past_the_first_check() {
    // Otherwise a target would only ever see refusals.
    assert_eq!(
        sluice_fuzz::verified_subject(sluice_fuzz::valid_token()).as_deref(),
        Some("fuzz-subject")
    );
    let text = include_str!("../../examples/demo-policy.yaml");
    assert!(sluice_policy::parse::parse_document(text).is_ok());
    for seed in seeds("compiled_policy") {
        assert!(sluice_policy::CompiledPolicy::from_json_bytes(&seed).is_ok());
    }
    // Whole segments, with and without an acked file, and one cut short
    // (recovered by dropping the torn record).
    for seed in seeds("spool") {
        let (_dir, spool) = sluice_fuzz::open_spool(&seed).expect("the seed spool opens");
        assert!(spool.last_seq() >= 2, "{}", spool.last_seq());
    }
    for seed in seeds("sql") {
        let text = std::str::from_utf8(&seed).unwrap();
        assert!(sluice_policy::sql::classify(text).is_ok(), "{text}");
    }
}

macro_rules! target_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let name = stringify!($name);
                let (_, run) = TARGETS.iter().find(|(n, _)| *n == name).expect("a target of that name");
                let seeds = seeds(name);
                let mut rng = Rng(0x5eed_5eed ^ name.len() as u64);
                let rounds = if name == "scram" { SCRAM_ROUNDS } else { ROUNDS };
                for seed in &seeds {
                    run(seed);
                    for _ in 0..rounds {
                        let input = mutate(&mut rng, seed, &seeds);
                        run(&input);
                    }
                }
            }
        )*
    };
}

target_tests!(
    pg_startup,
    pg_frontend,
    pg_backend,
    scram,
    sql,
    policy_document,
    compiled_policy,
    mask,
    spool,
    token,
);
