//! `tvck watch`'s terminal dashboard (ratatui): one run at a time, a chart of coverage,
//! hierarchy_A/B, Q or the loss terms, the latest values, freeze state, events and alerts,
//! epoch rate and time left. Drawing is a function of the runs and of [`Dashboard`] (the
//! selected run and chart), so the screen is tested on ratatui's TestBackend; the event
//! loop that reads keys and follows the files is the CLI's.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph, Wrap};
use ratatui::Frame;

use crate::monitor::{RunSummary, RunView, Severity};

use super::safe::value;
use super::watch::seconds;

/// The charts, in the order ↑/↓ cycle through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Coverage,
    Hierarchy,
    Q,
    Loss,
}

pub const CHARTS: [ChartKind; 4] = [
    ChartKind::Coverage,
    ChartKind::Hierarchy,
    ChartKind::Q,
    ChartKind::Loss,
];

impl ChartKind {
    pub fn title(self) -> &'static str {
        match self {
            ChartKind::Coverage => "coverage %",
            ChartKind::Hierarchy => "hierarchy_A / hierarchy_B",
            ChartKind::Q => "Q",
            ChartKind::Loss => "loss terms",
        }
    }
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    NextRun,
    PrevRun,
    NextChart,
    PrevChart,
    Quit,
    /// Draw again (e.g. `r`).
    Redraw,
    None,
}

impl Key {
    /// tab / → / l: next run; shift-tab / ← / h: previous; ↓ / j / m: next chart; ↑ / k:
    /// previous; q, Esc or Ctrl-C: quit; r: redraw. Key releases are ignored.
    pub fn of(e: &KeyEvent) -> Key {
        if e.kind == KeyEventKind::Release {
            return Key::None;
        }
        match e.code {
            KeyCode::Char('c') if e.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
            KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
            KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => Key::NextRun,
            KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => Key::PrevRun,
            KeyCode::Down | KeyCode::Char('j') | KeyCode::Char('m') => Key::NextChart,
            KeyCode::Up | KeyCode::Char('k') => Key::PrevChart,
            KeyCode::Char('r') => Key::Redraw,
            _ => Key::None,
        }
    }
}

/// What the loop does after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
    Nothing,
}

/// The dashboard's state: which run and which chart are shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    pub run: usize,
    pub chart: usize,
}

impl Dashboard {
    /// Apply a key with `runs` runs shown.
    pub fn key(&mut self, key: Key, runs: usize) -> Action {
        let before = self.clone();
        match key {
            Key::Quit => return Action::Quit,
            Key::Redraw => return Action::Redraw,
            Key::None => return Action::Nothing,
            Key::NextRun if runs > 0 => self.run = (self.run + 1) % runs,
            Key::PrevRun if runs > 0 => self.run = (self.run + runs - 1) % runs,
            Key::NextChart => self.chart = (self.chart + 1) % CHARTS.len(),
            Key::PrevChart => self.chart = (self.chart + CHARTS.len() - 1) % CHARTS.len(),
            _ => {}
        }
        if *self == before {
            Action::Nothing
        } else {
            Action::Redraw
        }
    }

    pub fn chart_kind(&self) -> ChartKind {
        CHARTS[self.chart % CHARTS.len()]
    }

    /// Draw the selected run (its summary is computed here).
    pub fn draw(&self, f: &mut Frame<'_>, runs: &[RunView]) {
        let area = f.area();
        if runs.is_empty() {
            f.render_widget(Paragraph::new("no runs"), area);
            return;
        }
        let i = self.run.min(runs.len() - 1);
        let view = &runs[i];
        let s = RunSummary::of(view);
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(1),
                Constraint::Length(1),
                Constraint::Min(8),
                Constraint::Length(9),
                Constraint::Length(1),
            ])
            .split(area);
        f.render_widget(Paragraph::new(header(&s, i, runs.len())), rows[0]);
        f.render_widget(Paragraph::new(tabs(runs, i)), rows[1]);
        let mid = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Min(40), Constraint::Length(34)])
            .split(rows[2]);
        self.draw_chart(f, mid[0], view);
        f.render_widget(
            Paragraph::new(side(&s)).block(Block::default().borders(Borders::ALL).title(" now ")),
            mid[1],
        );
        let bottom = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(60), Constraint::Percentage(40)])
            .split(rows[3]);
        f.render_widget(
            Paragraph::new(alerts(&s)).wrap(Wrap { trim: false }).block(
                Block::default().borders(Borders::ALL).title(format!(
                    " alerts ({} standing) ",
                    s.alerts.iter().filter(|a| a.standing).count()
                )),
            ),
            bottom[0],
        );
        f.render_widget(
            Paragraph::new(events(&s, bottom[1].height.saturating_sub(2) as usize))
                .wrap(Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(" events ")),
            bottom[1],
        );
        f.render_widget(
            Paragraph::new("tab/←→ run   ↑↓ chart   r redraw   q quit")
                .style(Style::default().add_modifier(Modifier::DIM)),
            rows[4],
        );
    }

    fn draw_chart(&self, f: &mut Frame<'_>, area: Rect, view: &RunView) {
        let kind = self.chart_kind();
        let series = series(view, kind);
        let colors = [
            Color::Cyan,
            Color::Yellow,
            Color::Magenta,
            Color::Green,
            Color::Red,
            Color::Blue,
            Color::LightCyan,
            Color::LightYellow,
            Color::LightMagenta,
            Color::LightGreen,
        ];
        let points: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let block = Block::default()
            .borders(Borders::ALL)
            .title(format!(" {} ", kind.title()));
        if points.is_empty() {
            f.render_widget(Paragraph::new("no values yet").block(block), area);
            return;
        }
        let (x0, x1) = bounds(points.iter().map(|p| p.0), 1.0);
        let (y0, y1) = bounds(points.iter().map(|p| p.1), 0.0);
        let datasets: Vec<Dataset<'_>> = series
            .iter()
            .enumerate()
            .map(|(k, (name, p))| {
                Dataset::default()
                    .name(name.clone())
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::default().fg(colors[k % colors.len()]))
                    .data(p)
            })
            .collect();
        let label = |v: f64| Span::raw(short(v));
        let chart = Chart::new(datasets)
            .block(block)
            .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(2, 3)))
            .x_axis(
                Axis::default()
                    .title("epoch")
                    .bounds([x0, x1])
                    .labels([label(x0), label(x1)]),
            )
            .y_axis(Axis::default().bounds([y0, y1]).labels([
                label(y0),
                label((y0 + y1) / 2.0),
                label(y1),
            ]));
        f.render_widget(chart, area);
    }
}

/// Range of finite values, widened when flat (`min_span` at least).
fn bounds(v: impl Iterator<Item = f64>, min_span: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v.filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < min_span.max(1e-9) {
        let pad = if min_span > 0.0 {
            (min_span - (hi - lo)) / 2.0
        } else {
            lo.abs().max(1e-3) * 0.05
        };
        lo -= pad;
        hi += pad;
    }
    (lo, hi)
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The chart's curves: name and (epoch, value) of every line that has the value.
pub fn series(view: &RunView, kind: ChartKind) -> Vec<(String, Vec<(f64, f64)>)> {
    let metric = |name: &str, scale: f64| -> Vec<(f64, f64)> {
        view.lines
            .iter()
            .filter_map(|l| match l.metric(name) {
                Some(Some(v)) if v.is_finite() => Some((l.epoch as f64, v * scale)),
                _ => None,
            })
            .collect()
    };
    match kind {
        ChartKind::Coverage => vec![("coverage".into(), metric("coverage", 100.0))],
        ChartKind::Hierarchy => vec![
            ("hierarchy_A".into(), metric("hierarchy_A", 1.0)),
            ("hierarchy_B".into(), metric("hierarchy_B", 1.0)),
        ],
        ChartKind::Q => vec![("Q".into(), metric("Q", 1.0))],
        ChartKind::Loss => {
            let mut terms: Vec<String> = Vec::new();
            for l in &view.lines {
                for k in l.loss.keys() {
                    if !terms.contains(k) {
                        terms.push(k.clone());
                    }
                }
            }
            terms
                .into_iter()
                .map(|t| {
                    let p: Vec<(f64, f64)> = view
                        .lines
                        .iter()
                        .filter_map(|l| match l.loss.get(&t) {
                            Some(Some(v)) if v.is_finite() => Some((l.epoch as f64, *v)),
                            _ => None,
                        })
                        .collect();
                    (value(&t).into_owned(), p)
                })
                // A term that is zero all along (switched off) is noise on the chart.
                .filter(|(_, p)| p.iter().any(|(_, v)| *v != 0.0))
                .collect()
        }
    }
}

fn header(s: &RunSummary, i: usize, n: usize) -> Line<'static> {
    let epoch = match (s.epoch, s.epochs) {
        (Some(e), Some(t)) => format!("epoch {e}/{t}"),
        (Some(e), None) => format!("epoch {e}"),
        (None, _) => "no epoch yet".into(),
    };
    let rate = s
        .epoch_seconds
        .map_or("rate -".into(), |r| format!("{}/epoch", seconds(r)));
    let left = s
        .seconds_left
        .map_or("time left -".into(), |l| format!("{} left", seconds(l)));
    let state_style = match s.state {
        crate::monitor::RunState::Running => Style::default().fg(Color::Green),
        crate::monitor::RunState::Finished => Style::default(),
        _ => Style::default().fg(Color::Red),
    };
    Line::from(vec![
        Span::styled(
            format!("tvck watch  {}/{n} {}", i + 1, value(&s.name)),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw("  "),
        Span::styled(s.state.as_str().to_string(), state_style),
        Span::raw(format!("  {epoch}  {rate}  {left}")),
        if s.critical {
            Span::styled(
                "  CRITICAL",
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        } else {
            Span::raw("")
        },
    ])
}

fn tabs(runs: &[RunView], selected: usize) -> Line<'static> {
    let mut spans = Vec::new();
    for (k, r) in runs.iter().enumerate() {
        let alert = if r.engine.critical() {
            "!"
        } else if r.alerting() {
            "*"
        } else {
            ""
        };
        let name = format!("{}{alert}", value(&r.name));
        if k == selected {
            spans.push(Span::styled(
                format!("[{name}]"),
                Style::default().add_modifier(Modifier::REVERSED),
            ));
        } else {
            spans.push(Span::raw(format!(" {name} ")));
        }
        spans.push(Span::raw(" "));
    }
    Line::from(spans)
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v != 0.0 && v.abs() < 1e-3 => format!("{v:.2e}"),
        Some(v) if v.is_finite() => format!("{v:.4}"),
        Some(v) => format!("{v}"),
        None => "null".into(),
    }
}

fn side(s: &RunSummary) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    if let Some(e) = s.metrics_epoch {
        out.push(Line::from(format!("evaluated at epoch {e}")));
    }
    let get = |name: &str| {
        s.metrics
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    if let Some(c) = get("coverage") {
        let text = match c {
            Some(c) if c.is_finite() => format!("{:.2}%", c * 100.0),
            other => num(other),
        };
        out.push(Line::from(format!("coverage     {text}")));
    }
    for name in ["hierarchy_A", "hierarchy_B", "Q", "dist_corr_B", "r_v0"] {
        if let Some(v) = get(name) {
            out.push(Line::from(format!("{name:<12} {}", num(v))));
        }
    }
    if let Some(Some(t)) = s.loss.get("total").map(|v| Some(*v)) {
        out.push(Line::from(format!("loss         {}", num(t))));
    }
    if s.lr.is_some() {
        out.push(Line::from(format!("lr           {}", num(s.lr))));
    }
    if !s.freeze.is_empty() {
        out.push(Line::from(""));
        for (part, frozen) in &s.freeze {
            out.push(Line::from(vec![
                Span::raw(format!("{:<12} ", value(part))),
                if *frozen {
                    Span::styled("frozen", Style::default().fg(Color::Cyan))
                } else {
                    Span::raw("trainable")
                },
            ]));
        }
    }
    out
}

fn alerts(s: &RunSummary) -> Vec<Line<'static>> {
    if s.alerts.is_empty() {
        return vec![Line::from("none")];
    }
    // Standing alerts first, the newest first within each group.
    let mut list: Vec<&crate::monitor::AlertState> = s.alerts.iter().collect();
    list.sort_by_key(|a| (!a.standing, std::cmp::Reverse(a.alert.epoch)));
    list.into_iter()
        .map(|a| {
            let style = match a.alert.severity {
                Severity::Critical => Style::default().fg(Color::Red),
                Severity::Warning => Style::default().fg(Color::Yellow),
                Severity::Info => Style::default(),
            };
            Line::from(vec![
                Span::styled(
                    format!(
                        "{}{} e{} ",
                        if a.standing { "* " } else { "  " },
                        a.alert.severity.label(),
                        a.alert.epoch
                    ),
                    style,
                ),
                Span::raw(format!(
                    "{}: {}",
                    value(&a.alert.rule),
                    value(&a.alert.message)
                )),
            ])
        })
        .collect()
}

fn events(s: &RunSummary, room: usize) -> Vec<Line<'static>> {
    if s.events.is_empty() {
        return vec![Line::from("none")];
    }
    let skip = s.events.len().saturating_sub(room.max(1));
    s.events[skip..]
        .iter()
        .map(|e| {
            Line::from(format!(
                "e{} {} {}: {}",
                e.epoch,
                value(&e.kind),
                value(&e.component),
                value(&e.message)
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use std::path::{Path, PathBuf};

    fn fixture_run(name: &str, file: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/monitor")
            .join(file);
        std::fs::copy(src, dir.join(crate::monitor::METRICS_FILE)).unwrap();
        (d, dir)
    }

    fn view(dir: &Path) -> RunView {
        let mut v = RunView::new(dir, crate::monitor::Settings::default());
        v.poll().unwrap();
        v
    }

    fn screen(d: &Dashboard, runs: &[RunView]) -> String {
        let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
        t.draw(|f| d.draw(f, runs)).unwrap();
        t.backend().to_string()
    }

    fn snap(name: &str, text: String) {
        insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, text);
        });
    }

    #[test]
    fn keys_switch_runs_and_charts_and_quit() {
        let k = |c| KeyEvent::new(c, KeyModifiers::NONE);
        assert_eq!(Key::of(&k(KeyCode::Tab)), Key::NextRun);
        assert_eq!(Key::of(&k(KeyCode::Right)), Key::NextRun);
        assert_eq!(Key::of(&k(KeyCode::BackTab)), Key::PrevRun);
        assert_eq!(Key::of(&k(KeyCode::Left)), Key::PrevRun);
        assert_eq!(Key::of(&k(KeyCode::Down)), Key::NextChart);
        assert_eq!(Key::of(&k(KeyCode::Up)), Key::PrevChart);
        assert_eq!(Key::of(&k(KeyCode::Char('q'))), Key::Quit);
        assert_eq!(Key::of(&k(KeyCode::Esc)), Key::Quit);
        assert_eq!(
            Key::of(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Key::Quit
        );
        assert_eq!(Key::of(&k(KeyCode::Char('x'))), Key::None);
        let mut release = k(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(Key::of(&release), Key::None);

        let mut d = Dashboard::default();
        assert_eq!(d.key(Key::NextRun, 3), Action::Redraw);
        assert_eq!(d.run, 1);
        d.key(Key::NextRun, 3);
        d.key(Key::NextRun, 3);
        assert_eq!(d.run, 0, "wraps around");
        d.key(Key::PrevRun, 3);
        assert_eq!(d.run, 2);
        d.run = 0;
        assert_eq!(
            d.key(Key::NextRun, 1),
            Action::Nothing,
            "one run: nothing moves"
        );
        assert_eq!(d.key(Key::NextRun, 0), Action::Nothing);
        d.key(Key::PrevChart, 3);
        assert_eq!(d.chart_kind(), ChartKind::Loss);
        d.key(Key::NextChart, 3);
        assert_eq!(d.chart_kind(), ChartKind::Coverage);
        assert_eq!(d.key(Key::Quit, 3), Action::Quit);
        assert_eq!(d.key(Key::Redraw, 3), Action::Redraw);
        assert_eq!(d.key(Key::None, 3), Action::Nothing);
    }

    #[test]
    fn screen_of_a_run_with_alerts() {
        let (_a, cov) = fixture_run("cov-drop", "coverage-drop.trigger.jsonl");
        let (_b, frozen) = fixture_run("frozen", "frozen-weights-changed.trigger.jsonl");
        let runs = vec![view(&cov), view(&frozen)];
        let mut d = Dashboard::default();
        snap("dashboard_coverage_drop", screen(&d, &runs));
        d.key(Key::NextRun, runs.len());
        d.key(Key::NextChart, runs.len());
        snap("dashboard_frozen_hierarchy", screen(&d, &runs));
        d.key(Key::PrevChart, runs.len());
        d.key(Key::PrevChart, runs.len());
        snap("dashboard_frozen_loss", screen(&d, &runs));
    }

    #[test]
    fn untrusted_names_are_escaped_on_screen() {
        let (_a, dir) = fixture_run("run\u{1b}[2J", "plateau.quiet.jsonl");
        let s = screen(&Dashboard::default(), &[view(&dir)]);
        assert!(!s.contains('\u{1b}'), "{s}");
        assert!(s.contains("run\\x1b[2J"), "{s}");
    }

    #[test]
    fn no_runs_no_panic_and_tiny_screens() {
        let mut t = Terminal::new(TestBackend::new(10, 3)).unwrap();
        t.draw(|f| Dashboard::default().draw(f, &[])).unwrap();
        let (_a, dir) = fixture_run("r", "non-finite.trigger.jsonl");
        let runs = [view(&dir)];
        for (w, h) in [(1, 1), (20, 5), (200, 60)] {
            let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
            for c in 0..CHARTS.len() {
                let d = Dashboard { run: 5, chart: c };
                t.draw(|f| d.draw(f, &runs)).unwrap();
            }
        }
    }
}
