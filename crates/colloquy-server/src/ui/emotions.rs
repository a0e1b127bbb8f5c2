//! Emotion scores of a chat: the strongest emotions on average over the user's messages, and
//! an inline SVG chart of how the top ones moved over the chat (no chart library: the server
//! computes the geometry, the stylesheet colours it).

use super::format;
use colloquy_storage::EventRecord;
use colloquy_wire::{emotion_scores, mean_emotions, rank_emotions, EventType};
use std::collections::BTreeMap;

/// Lines drawn on the chart.
pub const CHART_SERIES: usize = 5;
/// Emotions listed as the chat's top ones.
pub const TOP_EMOTIONS: usize = 3;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;

/// The `n` highest scores, highest first (ties by name).
pub fn top_scores(scores: &BTreeMap<String, f64>, n: usize) -> Vec<(String, f64)> {
    let mut v = rank_emotions(scores.iter().map(|(k, s)| (k.clone(), *s)));
    v.truncate(n);
    v
}

/// Collects the scored user messages of a chat, in order: (time since start in ms, scores).
#[derive(Default)]
pub struct Collector {
    points: Vec<(i64, BTreeMap<String, f64>)>,
}

impl Collector {
    /// Takes the scores of one page of events.
    pub fn add(&mut self, events: &[EventRecord], chat_start_ms: i64) {
        for e in events {
            if e.event_type != EventType::UserMessage {
                continue;
            }
            if let Some(scores) = e.emotion_features.as_deref().and_then(emotion_scores) {
                self.points.push((e.timestamp - chat_start_ms, scores));
            }
        }
    }

    /// The summary and chart; `span_ms` is the chat's length (the chart's time axis).
    pub fn finish(self, span_ms: i64) -> Emotions {
        summarize(self.points, span_ms)
    }
}

/// What the chat page shows about emotions.
pub struct Emotions {
    /// User messages that carried scores.
    pub scored_messages: usize,
    /// The strongest emotions on average.
    pub top: Vec<TopEmotion>,
    /// The chart, when there is anything to draw.
    pub chart: Option<Chart>,
}

/// One of the chat's strongest emotions.
pub struct TopEmotion {
    /// Emotion name.
    pub name: String,
    /// Mean score, two decimals.
    pub score: String,
    /// Mean score for `<meter>`.
    pub value: f64,
}

/// Geometry of the inline SVG chart.
pub struct Chart {
    /// `viewBox` width.
    pub width: f64,
    /// `viewBox` height.
    pub height: f64,
    /// Plot area edges.
    pub left: f64,
    /// Right edge of the plot area.
    pub right: f64,
    /// Bottom edge of the plot area.
    pub bottom: f64,
    /// x of the score labels (right-aligned left of the plot).
    pub label_x: f64,
    /// y of the time labels (under the plot).
    pub label_y: f64,
    /// One line per emotion.
    pub series: Vec<Series>,
    /// Horizontal grid lines with their score labels.
    pub y_ticks: Vec<Tick>,
    /// Time labels.
    pub x_ticks: Vec<Tick>,
    /// Plain-text description for screen readers.
    pub description: String,
    /// Times of the scored messages (table fallback rows).
    pub rows: Vec<ChartRow>,
}

/// One emotion's line.
pub struct Series {
    /// Emotion name.
    pub name: String,
    /// CSS class giving its colour (`s0`…).
    pub class: String,
    /// `points` of the `<polyline>`.
    pub points: String,
    /// A marker per message, with its tooltip.
    pub dots: Vec<Dot>,
    /// Mean score, two decimals.
    pub mean: String,
}

/// A marker on a line.
pub struct Dot {
    /// x in the viewBox.
    pub x: String,
    /// y in the viewBox.
    pub y: String,
    /// Tooltip.
    pub label: String,
}

/// An axis label.
pub struct Tick {
    /// Position along its axis in the viewBox.
    pub pos: String,
    /// Text.
    pub label: String,
    /// `text-anchor` (the first and last time labels stay inside the plot).
    pub anchor: &'static str,
}

/// One scored message in the data table under the chart.
pub struct ChartRow {
    /// Position in the chat.
    pub offset: String,
    /// The plotted emotions' scores, in series order.
    pub scores: Vec<String>,
}

fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// The top of the score axis: four equal steps of a round size that reach `peak`.
fn axis_top(peak: f64) -> f64 {
    const STEPS: [f64; 8] = [0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5];
    let step = STEPS
        .into_iter()
        .find(|s| 4.0 * s >= peak - 1e-9)
        .unwrap_or((peak / 4.0).ceil());
    4.0 * step
}

/// A time label on an axis spanning `span_ms`: seconds for short chats, else `mm:ss`.
fn time_label(t_ms: i64, span_ms: f64) -> String {
    if span_ms < 10_000.0 {
        format!("{:.1} s", t_ms as f64 / 1000.0)
    } else if span_ms < 60_000.0 {
        format!("{} s", (t_ms as f64 / 1000.0).round())
    } else {
        format::offset(t_ms)
    }
}

fn summarize(points: Vec<(i64, BTreeMap<String, f64>)>, span_ms: i64) -> Emotions {
    if points.is_empty() {
        return Emotions {
            scored_messages: 0,
            top: Vec::new(),
            chart: None,
        };
    }
    // Mean over the messages that scored the emotion.
    let mut ranked = mean_emotions(points.iter().map(|(_, scores)| scores));
    ranked.truncate(CHART_SERIES);
    let top = ranked
        .iter()
        .take(TOP_EMOTIONS)
        .map(|(name, v)| TopEmotion {
            name: name.clone(),
            score: format::score(*v),
            value: v.clamp(0.0, 1.0),
        })
        .collect();

    let last = points.iter().map(|(t, _)| *t).max().unwrap_or(0);
    let span = span_ms.max(last).max(1000) as f64;
    let peak = points
        .iter()
        .flat_map(|(_, s)| ranked.iter().filter_map(|(n, _)| s.get(n)))
        .fold(0.0f64, |a, b| a.max(*b));
    let y_max = axis_top(peak);
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let x_of = |t: i64| x0 + (t.max(0) as f64 / span) * (x1 - x0);
    let y_of = |v: f64| y1 - (v.clamp(0.0, y_max) / y_max) * (y1 - y0);

    let series = ranked
        .iter()
        .enumerate()
        .map(|(i, (name, mean))| {
            let mut pts = Vec::new();
            let mut dots = Vec::new();
            for (t, scores) in &points {
                let Some(v) = scores.get(name) else { continue };
                let (x, y) = (x_of(*t), y_of(*v));
                pts.push(format!("{},{}", num(x), num(y)));
                dots.push(Dot {
                    x: num(x),
                    y: num(y),
                    label: format!("{name} {} at {}", format::score(*v), format::offset(*t)),
                });
            }
            Series {
                name: name.clone(),
                class: format!("s{i}"),
                points: pts.join(" "),
                dots,
                mean: format::score(*mean),
            }
        })
        .collect();
    let y_ticks = (0..=4)
        .map(|i| {
            let v = y_max * i as f64 / 4.0;
            Tick {
                pos: num(y_of(v)),
                label: format!("{v:.2}"),
                anchor: "end",
            }
        })
        .collect();
    let x_ticks = (0..=4)
        .map(|i| {
            let t = (span * i as f64 / 4.0) as i64;
            Tick {
                pos: num(x_of(t)),
                label: time_label(t, span),
                anchor: match i {
                    0 => "start",
                    4 => "end",
                    _ => "middle",
                },
            }
        })
        .collect();
    let description = format!(
        "Scores of {} over {} scored user message{}, from 0 to {y_max:.2}.",
        ranked
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        points.len(),
        if points.len() == 1 { "" } else { "s" }
    );
    let rows = points
        .iter()
        .map(|(t, scores)| ChartRow {
            offset: format::offset(*t),
            scores: ranked
                .iter()
                .map(|(n, _)| scores.get(n).map(|v| format::score(*v)).unwrap_or_default())
                .collect(),
        })
        .collect();
    Emotions {
        scored_messages: points.len(),
        top,
        chart: Some(Chart {
            width: WIDTH,
            height: HEIGHT,
            left: x0,
            right: x1,
            bottom: y1,
            label_x: x0 - 8.0,
            label_y: y1 + 8.0,
            series,
            y_ticks,
            x_ticks,
            description,
            rows,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy_wire::EventRole;
    use uuid::Uuid;

    fn user(ts: i64, emotions: &str) -> EventRecord {
        EventRecord {
            id: Uuid::new_v4(),
            chat_id: Uuid::nil(),
            seq: 0,
            timestamp: ts,
            role: EventRole::User,
            event_type: EventType::UserMessage,
            message_text: Some("x".into()),
            emotion_features: Some(emotions.into()),
            metadata: Some(String::new()),
            related_event_id: None,
        }
    }

    #[test]
    fn top_emotions_are_means_over_messages() {
        let mut c = Collector::default();
        c.add(
            &[
                user(1_000, r#"{"Joy":0.9,"Calmness":0.1,"Anger":0.3,"Awe":0.2}"#),
                user(5_000, r#"{"Joy":0.1,"Calmness":0.8,"Anger":0.3,"Awe":0.2}"#),
                user(6_000, ""),
            ],
            0,
        );
        let e = c.finish(10_000);
        assert_eq!(e.scored_messages, 2);
        let top: Vec<_> = e
            .top
            .iter()
            .map(|t| (t.name.as_str(), t.score.as_str()))
            .collect();
        assert_eq!(
            top,
            [("Joy", "0.50"), ("Calmness", "0.45"), ("Anger", "0.30")]
        );
        let chart = e.chart.unwrap();
        assert_eq!(chart.series.len(), 4, "every emotion, up to five");
        assert_eq!(chart.series[0].name, "Joy");
        assert_eq!(chart.series[0].dots.len(), 2);
        // Joy 0.9 at 1 s of 10 s: near the top, a tenth of the way across.
        let first: Vec<f64> = chart.series[0]
            .points
            .split(' ')
            .next()
            .unwrap()
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(
            (first[0] - (LEFT + 0.1 * (WIDTH - RIGHT - LEFT))).abs() < 0.1,
            "{first:?}"
        );
        let expected_y = TOP + 0.1 * (HEIGHT - BOTTOM - TOP);
        assert!(
            (first[1] - expected_y).abs() < 0.1,
            "0.9 on a 0..1 axis: {first:?}"
        );
        assert_eq!(chart.x_ticks.last().unwrap().label, "10 s");
        let labels: Vec<_> = chart.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            ["0.00", "0.25", "0.50", "0.75", "1.00"],
            "0.9 rounds up to 1.0"
        );
        assert_eq!(chart.rows.len(), 2);
    }

    #[test]
    fn axes_use_round_numbers() {
        assert_eq!(axis_top(0.8), 0.8);
        assert_eq!(axis_top(0.7), 0.8);
        assert_eq!(axis_top(0.03), 0.04);
        assert_eq!(axis_top(0.0), 0.04);
        assert_eq!(axis_top(3.0), 4.0);
        assert_eq!(time_label(1_500, 4_000.0), "1.5 s");
        assert_eq!(time_label(12_400, 30_000.0), "12 s");
        assert_eq!(time_label(83_000, 600_000.0), "01:23");
    }

    #[test]
    fn no_scores_no_chart() {
        let mut c = Collector::default();
        c.add(&[user(0, "")], 0);
        let e = c.finish(1000);
        assert_eq!(e.scored_messages, 0);
        assert!(e.chart.is_none() && e.top.is_empty());
    }
}
