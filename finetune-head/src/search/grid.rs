//! The grid method: a budget of trials shared out into levels per dimension, then
//! every combination of the levels.

use super::{Param, Point, Space, Value};

/// Levels per dimension for a grid of at most `budget` points: categorical dimensions
/// take all their options when their product fits (the reals share what is left),
/// otherwise reals get one level and the options are shared out. Within a group the
/// levels stay as even as possible while the product grows as far as it can.
pub(super) fn grid_levels(space: &Space, budget: usize) -> Vec<usize> {
    let options: Vec<Option<usize>> = space
        .dims
        .iter()
        .map(|(_, p)| match p {
            Param::Choice(o) => Some(o.len()),
            _ => None,
        })
        .collect();
    let all_options = options
        .iter()
        .flatten()
        .try_fold(1usize, |acc, &k| acc.checked_mul(k))
        .filter(|&product| product <= budget);
    match all_options {
        Some(product) => {
            let caps: Vec<usize> = options.iter().map(|o| o.unwrap_or(usize::MAX)).collect();
            let fixed: Vec<bool> = options.iter().map(Option::is_some).collect();
            let mut levels: Vec<usize> = options.iter().map(|o| o.unwrap_or(1)).collect();
            share_out(&mut levels, &caps, &fixed, budget / product);
            levels
        }
        None => {
            let caps: Vec<usize> = options.iter().map(|o| o.unwrap_or(1)).collect();
            let mut levels = vec![1; caps.len()];
            share_out(&mut levels, &caps, &vec![false; caps.len()], budget);
            levels
        }
    }
}

/// Raises the levels not `fixed`, lowest first (then in dimension order), up to their
/// caps, while the product of the raised ones stays within `budget`.
fn share_out(levels: &mut [usize], caps: &[usize], fixed: &[bool], budget: usize) {
    let product = |levels: &[usize]| -> usize {
        levels
            .iter()
            .zip(fixed)
            .filter(|(_, f)| !**f)
            .fold(1usize, |acc, (l, _)| acc.saturating_mul(*l))
    };
    loop {
        let mut order: Vec<usize> = (0..levels.len())
            .filter(|&d| !fixed[d] && levels[d] < caps[d])
            .collect();
        order.sort_by_key(|&d| (levels[d], d));
        let raised = order.into_iter().find(|&d| {
            levels[d] += 1;
            let fits = product(levels) <= budget;
            levels[d] -= 1;
            fits
        });
        match raised {
            Some(d) => levels[d] += 1,
            None => return,
        }
    }
}

/// The grid of at most `budget` points (none for a budget of 0), the first dimension
/// varying slowest. A real with `n` levels takes `n` evenly spaced values on its scale,
/// endpoints included (its midpoint when `n = 1`); a choice with fewer levels than
/// options takes evenly spaced options starting with the first.
pub(super) fn grid(space: &Space, budget: usize) -> Vec<Point> {
    if budget == 0 {
        return Vec::new();
    }
    let axes: Vec<Vec<Value>> = space
        .dims
        .iter()
        .zip(grid_levels(space, budget))
        .map(|((_, param), n)| {
            let at = |i: usize| {
                if n == 1 {
                    0.5
                } else {
                    i as f64 / (n - 1) as f64
                }
            };
            (0..n)
                .map(|i| match param {
                    Param::Choice(options) => Value::Index(if n == 1 {
                        0
                    } else {
                        (i * (options.len() - 1) + (n - 1) / 2) / (n - 1)
                    }),
                    _ => Value::Real(param.value_at(at(i))),
                })
                .collect()
        })
        .collect();
    let mut points = vec![Vec::with_capacity(axes.len())];
    for axis in &axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push(*v);
                    p
                })
            })
            .collect();
    }
    points
}
