//! What `culprit top` draws: the screen state, its keys, and its rendering with ratatui (the
//! plain-text form is `top_plain`'s, re-exported here). No I/O here, so that the TUI is tested
//! with ratatui's test backend.

use ratatui::{
    Frame,
    crossterm::event::{KeyCode, KeyEvent},
    layout::{Constraint, Direction, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap},
};

pub use super::top_plain::plain;
use super::top_plain::{NOTHING_YET, head, tail};
use crate::{
    cause::{Cause, Part, TerminalColour},
    live::view::{RequestView, Snapshot},
    printable::printable,
    tools::{bar, explain},
};

/// What the screen shows.
#[derive(Debug, Default)]
pub struct TopState {
    pub snapshot: Option<Snapshot>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
    pub selected: usize,
    /// Showing the selected request's decomposition.
    pub detail: bool,
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    Refresh,
}

impl TopState {
    fn requests(&self) -> &[RequestView] {
        self.snapshot
            .as_ref()
            .map_or(&[], |s| s.slow_requests.as_slice())
    }

    pub fn selected_request(&self) -> Option<&RequestView> {
        self.requests().get(self.selected)
    }

    /// A new snapshot keeps the selection in range.
    pub fn update(&mut self, snapshot: Snapshot) {
        self.snapshot = Some(snapshot);
        self.error = None;
        let n = self.requests().len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if !self.detail => return Action::Quit,
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => self.detail = false,
            KeyCode::Enter | KeyCode::Right => self.detail = self.selected_request().is_some(),
            KeyCode::Down | KeyCode::Char('j') if self.selected + 1 < self.requests().len() => {
                self.selected += 1;
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::Char('r') => return Action::Refresh,
            _ => {}
        }
        Action::None
    }
}

const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);

fn colour(c: TerminalColour) -> Color {
    match c {
        TerminalColour::Blue => Color::Blue,
        TerminalColour::Red => Color::Red,
        TerminalColour::Magenta => Color::Magenta,
        TerminalColour::Green => Color::Green,
        TerminalColour::Yellow => Color::Yellow,
        TerminalColour::Cyan => Color::Cyan,
        TerminalColour::Gray => Color::Gray,
        TerminalColour::DarkGray => Color::DarkGray,
    }
}

/// A cause in its colour, bold when it is the kernel's.
fn cause_style(cause: Cause) -> Style {
    let s = Style::new().fg(colour(cause.colour().terminal));
    if cause.is_kernel() {
        s.add_modifier(Modifier::BOLD)
    } else {
        s
    }
}

pub fn render(frame: &mut Frame, state: &TopState) {
    let [header, services, middle, lower, footer] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Min(5),
            Constraint::Length(1),
        ])
        .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(state)), header);
    let Some(snap) = &state.snapshot else {
        let text = state
            .error
            .clone()
            .unwrap_or_else(|| "waiting for the agent…".to_string());
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .block(Block::default().borders(Borders::ALL).title("culprit top")),
            services.union(middle).union(lower),
        );
        frame.render_widget(Paragraph::new(footer_line(state)), footer);
        return;
    };
    render_services(frame, services, snap);
    if state.detail
        && let Some(r) = state.selected_request()
    {
        render_detail(frame, middle.union(lower), r);
        frame.render_widget(Paragraph::new(footer_line(state)), footer);
        return;
    }
    let [throttled, neighbours, peers] = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
        ])
        .areas(middle);
    let small = |title: &str, rows: Vec<(String, String)>, empty: &str| {
        let rows: Vec<Row> = if rows.is_empty() {
            vec![Row::new(vec![Cell::from(empty.to_string())])]
        } else {
            rows.into_iter()
                .map(|(a, b)| Row::new(vec![Cell::from(a), Cell::from(b)]))
                .collect()
        };
        Table::new(rows, [Constraint::Fill(1), Constraint::Length(7)]).block(
            Block::default()
                .borders(Borders::ALL)
                .title(title.to_string()),
        )
    };
    // Borders, the value column and the column gap.
    let w = (throttled.width as usize).saturating_sub(10).max(6);
    frame.render_widget(
        small(
            "throttled cgroups",
            snap.throttled
                .iter()
                .map(|t| {
                    (
                        tail(&t.cgroup, w),
                        format!("{:.0}ms", t.cpu_stat_throttled_ms),
                    )
                })
                .collect(),
            "none",
        ),
        throttled,
    );
    frame.render_widget(
        small(
            "noisy neighbours",
            snap.neighbours
                .iter()
                .map(|n| (head(&n.neighbour, w), format!("{:.0}ms", n.contention_ms)))
                .collect(),
            "none",
        ),
        neighbours,
    );
    frame.render_widget(
        small(
            "retransmit peers",
            snap.retransmits
                .iter()
                .map(|p| (head(&p.peer, w), format!("{}x", p.retransmits)))
                .collect(),
            "none",
        ),
        peers,
    );
    render_requests(frame, lower, state, snap);
    frame.render_widget(Paragraph::new(footer_line(state)), footer);
}

fn header_line(state: &TopState) -> Line<'static> {
    let mut spans = vec![Span::styled("culprit top", BOLD)];
    if let Some(s) = &state.snapshot {
        let h = &s.health;
        let lost: u64 = h.events_lost.values().sum();
        spans.push(Span::raw(format!(
            "  probes {}/{}  spans {}  lost {}  last {:.0}s",
            h.probes_attached,
            h.probes_total,
            h.otlp.ingress.spans_received,
            lost,
            s.window_ms as f64 / 1e3
        )));
        if h.degraded {
            spans.push(Span::styled(
                "  DEGRADED",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
        }
    }
    if let Some(e) = &state.error
        && state.snapshot.is_some()
    {
        spans.push(Span::styled(
            format!("  (stale: {})", head(e, 30)),
            Style::new().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}

fn footer_line(state: &TopState) -> Line<'static> {
    let keys = if state.detail {
        "Esc back  ↑/↓ previous/next request  q quit"
    } else {
        "↑/↓ select  Enter explain  r refresh  q quit"
    };
    Line::from(Span::styled(keys, Style::new().fg(Color::DarkGray)))
}

fn render_services(frame: &mut Frame, area: Rect, snap: &Snapshot) {
    let block = Block::default().borders(Borders::ALL).title("services");
    if snap.services.is_empty() {
        frame.render_widget(nothing_yet(block), area);
        return;
    }
    let rows: Vec<Row> = snap
        .services
        .iter()
        .map(|s| {
            Row::new(vec![
                Cell::from(head(&s.key, 22)),
                Cell::from(s.requests.to_string()),
                Cell::from(format!("{:.1}", s.p50_ms)),
                Cell::from(format!("{:.1}", s.p99_ms)),
                Cell::from(Span::styled(
                    format!("{} {:.0}%", s.dominant_cause, s.dominant_share * 100.0),
                    cause_style(s.dominant_cause),
                )),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(22),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(vec![
            "SERVICE",
            "REQS",
            "P50 ms",
            "P99 ms",
            "DOMINANT CAUSE",
        ])
        .style(BOLD),
    )
    .block(block);
    frame.render_widget(table, area);
}

fn nothing_yet(block: Block<'_>) -> Paragraph<'_> {
    Paragraph::new(NOTHING_YET)
        .wrap(Wrap { trim: true })
        .block(block)
}

fn render_requests(frame: &mut Frame, area: Rect, state: &TopState, snap: &Snapshot) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title("slowest requests (Enter: decomposition)");
    if snap.slow_requests.is_empty() {
        frame.render_widget(nothing_yet(block), area);
        return;
    }
    let rows: Vec<Row> = snap
        .slow_requests
        .iter()
        .map(|r| {
            Row::new(vec![
                Cell::from(format!("{:.1}", r.duration_ms)),
                Cell::from(head(&printable(r.service.as_deref().unwrap_or("?")), 16)),
                Cell::from(head(&printable(&r.name), 22)),
                Cell::from(Span::styled(r.cause.as_str(), cause_style(r.cause))),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(22),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(vec!["MS", "SERVICE", "REQUEST", "CAUSE"]).style(BOLD))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ")
    .block(block);
    let mut table_state = TableState::default().with_selected(Some(state.selected));
    frame.render_stateful_widget(table, area, &mut table_state);
}

fn render_detail(frame: &mut Frame, area: Rect, r: &RequestView) {
    let width = (area.width as usize).saturating_sub(4).max(10);
    let cells = bar::cells(&r.parts, width);
    let bar_line = Line::from(
        Part::ALL
            .into_iter()
            .zip(cells)
            .filter(|(_, n)| *n > 0)
            .map(|(part, n)| {
                Span::styled(
                    "█".repeat(n),
                    Style::new().fg(colour(part.colour().terminal)),
                )
            })
            .collect::<Vec<_>>(),
    );
    let mut lines = vec![
        bar_line,
        Line::from(vec![
            Span::raw("cause "),
            Span::styled(
                format!("{} ({:.0}%)", r.cause, r.cause_share * 100.0),
                cause_style(r.cause),
            ),
            Span::raw(format!(
                "  service {}  pid {}",
                r.service.as_deref().unwrap_or("?"),
                r.pid
            )),
        ]),
        Line::from(format!("trace {}  span {}", r.trace_id, r.span_id)),
    ];
    lines.extend(explain::part_lines(r).into_iter().map(Line::from));
    if let Some(cg) = &r.cgroup {
        lines.push(Line::from(format!(
            "cgroup {}",
            tail(cg, width.saturating_sub(7))
        )));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(head(
            &format!("{} — {:.1} ms", printable(&r.name), r.duration_ms),
            width,
        ))),
        area,
    );
}
