//! A request's decomposition as a bar of fixed width: each part gets cells in proportion to its
//! time (largest remainders first, so the cells always add up to the width).

use crate::{cause::Part, join::Parts};

/// Cells per part (in [`Part::ALL`] order) for a bar `width` cells wide.
pub(crate) fn cells(parts: &Parts, width: usize) -> [usize; Part::ALL.len()] {
    let values = parts.values();
    let total: f64 = values.iter().sum();
    let mut out = [0usize; Part::ALL.len()];
    if total <= 0.0 || width == 0 {
        return out;
    }
    let exact: Vec<f64> = values.iter().map(|v| v / total * width as f64).collect();
    for (o, e) in out.iter_mut().zip(&exact) {
        *o = e.floor() as usize;
    }
    let mut left = width - out.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for i in order {
        if left == 0 {
            break;
        }
        if exact[i] > 0.0 {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

/// The bar in plain text, e.g. `[CCCCRRRRRRRR....]`.
pub(crate) fn text(parts: &Parts, width: usize) -> String {
    let mut s = String::with_capacity(width + 2);
    s.push('[');
    for (n, part) in cells(parts, width).iter().zip(Part::ALL) {
        s.extend(std::iter::repeat_n(part.glyph(), *n));
    }
    s.push(']');
    s
}

/// `C on-CPU  R run-queue …` for the parts present.
pub(crate) fn legend(parts: &Parts) -> String {
    parts
        .each()
        .filter(|(p, ms)| *ms > 0.0 && p.glyph() != ' ')
        .map(|(p, _)| format!("{} {}", p.glyph(), p.label()))
        .collect::<Vec<_>>()
        .join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(on: f64, cont: f64, off: f64) -> Parts {
        Parts {
            on_cpu_ms: on,
            contention_ms: cont,
            off_cpu_ms: off,
            ..Parts::default()
        }
    }

    #[test]
    fn cells_add_up_to_the_width_in_proportion() {
        let c = cells(&parts(25.0, 50.0, 25.0), 20);
        assert_eq!(c, [0, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]);
        // Thirds of 10: the remainders decide, the sum holds.
        let c = cells(&parts(1.0, 1.0, 1.0), 10);
        assert_eq!(c.iter().sum::<usize>(), 10);
        assert!(
            c.iter().filter(|&&n| n > 0).all(|&n| n == 3 || n == 4),
            "{c:?}"
        );
        assert_eq!(cells(&Parts::default(), 10), [0; Part::ALL.len()]);
        assert_eq!(cells(&parts(1.0, 0.0, 0.0), 0), [0; Part::ALL.len()]);
    }

    #[test]
    fn a_tiny_part_is_not_given_a_cell_over_a_bigger_one() {
        let c = cells(&parts(0.1, 99.9, 0.0), 10);
        assert_eq!(c, [0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn the_text_bar_uses_one_glyph_per_part() {
        assert_eq!(text(&parts(2.0, 6.0, 2.0), 10), "[CCRRRRRR..]");
        assert_eq!(
            legend(&parts(2.0, 6.0, 0.0)),
            "C on-CPU  R run-queue (contention)"
        );
    }
}
