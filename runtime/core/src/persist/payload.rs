//! Reading a record's payload: one serde pass over postcard's bytes that checks every
//! count and value and, when given destinations, writes them ([`run`]). The caller runs
//! it twice, checking and then writing, so a refused payload changes nothing.

use core::cell::Cell;
use core::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use super::format::{COUNTERS, counters_ok, learner_value_ok};
use super::{DecodeError, IMPOSSIBLE, LearnerState};
use crate::head::Dims;

/// One pass over the payload; writes where the destinations are `Some`.
pub(super) fn run<L: LearnerState>(
    payload: &[u8],
    learner_kind: (u8, Dims),
    n_params: usize,
    n_opt: usize,
    params: Option<&mut [f32]>,
    learner: Option<&mut L>,
) -> Result<(u32, u64), DecodeError> {
    let fail = Cell::new(None);
    let mut de = postcard::Deserializer::from_bytes(payload);
    let seed = PayloadSeed {
        fail: &fail,
        learner_kind,
        n_params,
        n_opt,
        params,
        learner,
    };
    let out = seed.deserialize(&mut de).map_err(|e| {
        fail.get().unwrap_or(match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::BadPayload {
                what: "the payload ends early",
            },
            postcard::Error::DeserializeBadVarint => DecodeError::BadPayload {
                what: "a malformed integer",
            },
            _ => DecodeError::BadPayload {
                what: "malformed data",
            },
        })
    })?;
    match de.finalize() {
        Ok([]) => Ok(out),
        _ => Err(DecodeError::BadPayload {
            what: "unexpected bytes after the optimizer state",
        }),
    }
}

/// Records `e` for [`run`] and returns a serde error to unwind with.
fn raise<E: de::Error>(fail: &Cell<Option<DecodeError>>, e: DecodeError) -> E {
    fail.set(Some(e));
    E::custom(e)
}

/// The payload (a 4-tuple in postcard).
struct PayloadSeed<'a, 'f, L> {
    fail: &'f Cell<Option<DecodeError>>,
    /// The stored learner's code and the head's dimensions.
    learner_kind: (u8, Dims),
    n_params: usize,
    n_opt: usize,
    params: Option<&'a mut [f32]>,
    learner: Option<&'a mut L>,
}

impl<'de, L: LearnerState> DeserializeSeed<'de> for PayloadSeed<'_, '_, L> {
    type Value = (u32, u64);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(4, self)
    }
}

impl<'de, L: LearnerState> Visitor<'de> for PayloadSeed<'_, '_, L> {
    type Value = (u32, u64);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an edgetune head payload")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let fail = self.fail;
        let short = || {
            raise(
                fail,
                DecodeError::BadPayload {
                    what: "the payload ends early",
                },
            )
        };
        let step: u32 = seq.next_element()?.ok_or_else(short)?;
        let rng: u64 = seq.next_element()?.ok_or_else(short)?;
        if !counters_ok(self.learner_kind.0, step, rng) {
            return Err(raise(fail, COUNTERS));
        }
        let what = "number of parameters does not match the dimensions";
        let sink = self.params.map_or(Sink::<L>::Check, Sink::Slice);
        seq.next_element_seed(Floats {
            fail,
            n: self.n_params,
            what,
            learner_kind: None,
            sink,
        })?
        .ok_or_else(short)?;
        let what = "number of learner values does not match the dimensions";
        let sink = self
            .learner
            .map_or(Sink::Check, |l| Sink::Learner(l, step, rng));
        seq.next_element_seed(Floats {
            fail,
            n: self.n_opt,
            what,
            learner_kind: Some(self.learner_kind),
            sink,
        })?
        .ok_or_else(short)?;
        Ok((step, rng))
    }
}

/// Where decoded values go.
enum Sink<'a, L> {
    /// Nowhere: validate only.
    Check,
    /// Into a slice of exactly the expected length.
    Slice(&'a mut [f32]),
    /// Into a learner's state, with this step count and generator state.
    Learner(&'a mut L, u32, u64),
}

/// A sequence of exactly `n` finite f32 (of a learner's state when `learner_kind`
/// is given: each checked by [`learner_value_ok`]).
struct Floats<'a, 'f, L> {
    fail: &'f Cell<Option<DecodeError>>,
    n: usize,
    what: &'static str,
    learner_kind: Option<(u8, Dims)>,
    sink: Sink<'a, L>,
}

impl<'de, L: LearnerState> DeserializeSeed<'de> for Floats<'_, '_, L> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, L: LearnerState> Visitor<'de> for Floats<'_, '_, L> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of f32")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Floats {
            fail,
            n,
            what,
            learner_kind,
            sink,
        } = self;
        let miscount = || raise(fail, DecodeError::BadPayload { what });
        // postcard knows the exact length unless it exceeds the remaining bytes.
        if seq.size_hint() != Some(n) {
            return Err(miscount());
        }
        let (mut count, mut err) = (0usize, None);
        let mut values = core::iter::from_fn(|| {
            if count == n {
                return None;
            }
            match seq.next_element::<f32>() {
                Ok(Some(v)) if !v.is_finite() => err = Some(raise(fail, DecodeError::NonFinite)),
                Ok(Some(v))
                    if learner_kind.is_some_and(|(c, d)| !learner_value_ok(c, d, count, v)) =>
                {
                    err = Some(raise(fail, IMPOSSIBLE))
                }
                Ok(Some(v)) => {
                    count += 1;
                    return Some(v);
                }
                Ok(None) => err = Some(miscount()),
                Err(e) => err = Some(e),
            }
            None
        });
        match sink {
            Sink::Check => values.by_ref().for_each(drop),
            Sink::Slice(dst) => dst
                .iter_mut()
                .zip(values.by_ref())
                .for_each(|(d, v)| *d = v),
            Sink::Learner(l, step, rng) => l.restore(step, rng, values.by_ref()),
        }
        if let Some(e) = err {
            return Err(e);
        }
        match seq.next_element::<f32>()? {
            None if count == n => Ok(()),
            _ => Err(miscount()),
        }
    }
}
