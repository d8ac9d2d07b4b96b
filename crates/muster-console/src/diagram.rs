//! The offering-account lifecycle as an SVG diagram, generated from the one transition table
//! (`muster_core::offering::lifecycle::TRANSITIONS`): a change to the table changes the
//! picture, with nothing drawn by hand.
//!
//! States are placed in columns by their distance (fewest actions) from `Requested`, and in
//! each column in Waldur's state order; each edge is one state pair the table connects, named
//! by the actions that lead along it.

use muster_core::offering::lifecycle::{AccountState, TRANSITIONS};
use std::collections::BTreeMap;
use std::fmt::Write;

const BOX_W: i32 = 212;
const BOX_H: i32 = 46;
const COL: i32 = 270;
const ROW: i32 = 86;
const PAD: i32 = 16;

/// Column (distance from `Requested`) of every state; states the table never reaches go last.
pub fn columns() -> BTreeMap<AccountState, usize> {
    let mut depth = BTreeMap::new();
    depth.insert(AccountState::Requested, 0usize);
    let mut frontier = vec![AccountState::Requested];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for from in frontier {
            let d = depth[&from];
            for t in TRANSITIONS.iter().filter(|t| t.sources.contains(&from)) {
                if let std::collections::btree_map::Entry::Vacant(e) = depth.entry(t.target) {
                    e.insert(d + 1);
                    next.push(t.target);
                }
            }
        }
        frontier = next;
    }
    let last = depth.values().max().copied().unwrap_or(0) + 1;
    for s in AccountState::ALL {
        depth.entry(s).or_insert(last);
    }
    depth
}

/// Every `(from, to)` the table connects, with the actions that lead along it.
pub fn edges() -> BTreeMap<(AccountState, AccountState), Vec<&'static str>> {
    let mut out: BTreeMap<(AccountState, AccountState), Vec<&'static str>> = BTreeMap::new();
    for t in TRANSITIONS.iter() {
        for from in t.sources {
            out.entry((*from, t.target)).or_default().push(t.action.name());
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The diagram. `count(state)` is shown in each box; `href(state)` is where a box links to.
pub fn svg(count: impl Fn(AccountState) -> i64, href: impl Fn(AccountState) -> String) -> String {
    let cols = columns();
    let mut per_col: BTreeMap<usize, Vec<AccountState>> = BTreeMap::new();
    for s in AccountState::ALL {
        per_col.entry(cols[&s]).or_default().push(s);
    }
    let rows = per_col.values().map(Vec::len).max().unwrap_or(1) as i32;
    let mut pos = BTreeMap::new();
    for (c, states) in &per_col {
        // Centre shorter columns vertically.
        let offset = (rows - states.len() as i32) * ROW / 2;
        for (r, s) in states.iter().enumerate() {
            pos.insert(*s, (PAD + *c as i32 * COL, PAD + offset + r as i32 * ROW));
        }
    }
    let width = PAD * 2 + (per_col.len() as i32 - 1) * COL + BOX_W;
    let height = PAD * 2 + (rows - 1) * ROW + BOX_H;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="group" aria-labelledby="lifecycle-title"><title id="lifecycle-title">Offering-account lifecycle: states, the number of accounts in each, and the allowed transitions</title><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5b6670"/></marker></defs>"##
    );
    for ((from, to), actions) in edges() {
        let (fx, fy) = pos[&from];
        let (tx, ty) = pos[&to];
        let (x1, y1, x2, y2) = anchor(fx, fy, tx, ty);
        // Bend every edge a little to its right, so A→B and B→A are two distinct curves.
        let (mx, my) = ((x1 + x2) as f64 / 2.0, (y1 + y2) as f64 / 2.0);
        let (dx, dy) = ((x2 - x1) as f64, (y2 - y1) as f64);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let bend = 18.0;
        let (cx, cy) = (mx - dy / len * bend, my + dx / len * bend);
        let _ = write!(
            out,
            r##"<path class="edge" d="M{x1},{y1} Q{cx:.0},{cy:.0} {x2},{y2}" fill="none" stroke="#5b6670" stroke-width="1.4" marker-end="url(#arrow)"><title>{} → {}: {}</title></path>"##,
            escape(from.label()),
            escape(to.label()),
            actions.join(", ")
        );
    }
    for s in AccountState::ALL {
        let (x, y) = pos[&s];
        let (fill, stroke) = colours(s);
        let n = count(s);
        let _ = write!(
            out,
            r##"<a href="{}" aria-label="{}: {n} accounts"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="7" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/><text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="600" fill="#1b1f24">{}</text><text x="{}" y="{}" text-anchor="middle" font-size="13" fill="#1b1f24">{n}</text></a>"##,
            escape(&href(s)),
            escape(s.label()),
            x + BOX_W / 2,
            y + 19,
            escape(s.label()),
            x + BOX_W / 2,
            y + 37,
        );
    }
    out.push_str("</svg>");
    out
}

/// Where an edge leaves and meets the boxes: the sides facing each other.
fn anchor(fx: i32, fy: i32, tx: i32, ty: i32) -> (i32, i32, i32, i32) {
    if fx == tx {
        // Same column: bottom to top, or top to bottom.
        if fy < ty {
            (fx + BOX_W / 2, fy + BOX_H, tx + BOX_W / 2, ty)
        } else {
            (fx + BOX_W / 2, fy, tx + BOX_W / 2, ty + BOX_H)
        }
    } else if fx < tx {
        (fx + BOX_W, fy + BOX_H / 2, tx, ty + BOX_H / 2)
    } else {
        (fx, fy + BOX_H / 2, tx + BOX_W, ty + BOX_H / 2)
    }
}

fn colours(s: AccountState) -> (&'static str, &'static str) {
    use AccountState as S;
    match s {
        S::Ok => ("#dff1e4", "#1a6b35"),
        S::PendingAccountLinking | S::PendingAdditionalValidation => ("#fff1cc", "#8a5a00"),
        S::ErrorCreating | S::ErrorDeleting => ("#fbe3e3", "#a4161a"),
        S::Deleted => ("#eceef0", "#6b747d"),
        _ => ("#e1edf8", "#1f5f99"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::offering::lifecycle::next_states;

    #[test]
    fn every_table_transition_is_an_edge_and_nothing_else_is() {
        let e = edges();
        let mut n = 0;
        for from in AccountState::ALL {
            for to in next_states(from) {
                assert!(e.contains_key(&(from, to)), "{from:?} -> {to:?} missing");
                n += 1;
            }
        }
        assert_eq!(e.len(), n);
    }

    #[test]
    fn the_drawing_has_every_state_with_its_count_and_link() {
        let svg = svg(
            |s| i64::from(s.as_int()) * 10,
            |s| format!("/accounts?state={}", s.label()),
        );
        for s in AccountState::ALL {
            assert!(svg.contains(&format!(">{}</text>", s.label())), "{s:?}");
            assert!(
                svg.contains(&format!(">{}</text>", i64::from(s.as_int()) * 10)),
                "{s:?}"
            );
        }
        assert_eq!(svg.matches("<path class=\"edge\"").count(), edges().len());
        assert!(
            !svg.contains("style="),
            "no inline styles: the console runs under style-src 'self'"
        );
        assert_eq!(columns()[&AccountState::Requested], 0);
        assert_eq!(columns()[&AccountState::Deleted], 4);
    }
}
