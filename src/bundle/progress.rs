//! The live display of a batch: per container the step `molt upgrade --format json` is at (its
//! step events, streamed from the host) and the time since the container's upgrade began. On a
//! terminal one line per container, redrawn in place; piped, a plain line as each step starts and
//! ends. Either way a container's result line follows when it ends.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::rollout::Say;

/// One step event of `molt upgrade --format json` (src/upgrade's `StepEvent`) as read back.
#[derive(Debug, Deserialize)]
pub struct StepEvent {
    pub step: String,
    /// start, done or failed.
    pub phase: String,
    pub millis: Option<u128>,
}

impl StepEvent {
    /// A line of `molt upgrade`'s stderr, when it is a step event (log records are not).
    pub fn parse(line: &str) -> Option<StepEvent> {
        serde_json::from_str(line).ok()
    }
}

struct Line {
    id: String,
    host: String,
    /// The current step, or the container's result line once it ended.
    text: String,
    ended: bool,
}

pub struct Progress<'a> {
    say: Say<'a>,
    live: bool,
    widths: (usize, usize),
    t0: Instant,
    lines: Mutex<(Vec<Line>, bool)>,
    ended: Condvar,
}

impl<'a> Progress<'a> {
    /// The batch's containers as (id, host); `live` redraws in place (a terminal).
    pub fn new(say: Say<'a>, live: bool, widths: (usize, usize), rows: &[(&str, &str)]) -> Progress<'a> {
        let lines = rows.iter().map(|(id, host)| Line { id: id.to_string(), host: host.to_string(), text: "starting".into(), ended: false }).collect();
        Progress { say, live, widths, t0: Instant::now(), lines: Mutex::new((lines, false)), ended: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<Line>, bool)> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn head(&self, id: &str, host: &str) -> String {
        format!("  {id:<iw$}  {host:<hw$}", iw = self.widths.0, hw = self.widths.1)
    }

    /// A step of container `id` started or ended.
    pub fn step(&self, id: &str, e: &StepEvent) {
        let mut g = self.lock();
        let Some(l) = g.0.iter_mut().find(|l| l.id == id) else { return };
        l.text = format!("step {}", e.step);
        if self.live {
            self.draw(&mut g);
        } else {
            let phase = if e.phase == "start" { "started" } else { &e.phase };
            let ms = e.millis.map(|ms| format!(" {ms} ms")).unwrap_or_default();
            (self.say)(&format!("{}  step {} {phase}{ms}", self.head(id, &l.host), e.step));
        }
    }

    /// Container `id` ended: `line` is its result.
    pub fn ended(&self, id: &str, line: String) {
        let mut g = self.lock();
        match g.0.iter_mut().find(|l| l.id == id) {
            Some(l) if self.live => {
                l.text = line;
                l.ended = true;
                self.draw(&mut g);
            }
            Some(l) => {
                l.ended = true;
                (self.say)(&format!("  {line}"));
            }
            None => (self.say)(&format!("  {line}")),
        }
        self.ended.notify_all();
    }

    /// On a terminal: redraw twice a second (the times move) until every container ended.
    pub fn tick_until_ended(&self) {
        if !self.live {
            return;
        }
        let mut g = self.lock();
        while !g.0.iter().all(|l| l.ended) {
            g = self.ended.wait_timeout(g, Duration::from_millis(500)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            self.draw(&mut g);
        }
    }

    /// The whole block, over the one drawn before (cursor up its height, each line cleared).
    fn draw(&self, g: &mut MutexGuard<'_, (Vec<Line>, bool)>) {
        let ms = self.t0.elapsed().as_millis();
        let text: Vec<String> = g
            .0
            .iter()
            .map(|l| if l.ended { format!("\x1b[2K  {}", l.text) } else { format!("\x1b[2K{}  {:<22} {ms:>6} ms", self.head(&l.id, &l.host), l.text) })
            .collect();
        let up = if g.1 { format!("\x1b[{}F", text.len()) } else { String::new() };
        g.1 = true;
        (self.say)(&format!("{up}{}", text.join("\n")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(live: bool) -> Vec<String> {
        let said = Mutex::new(vec![]);
        let say = |l: &str| said.lock().unwrap().push(l.to_string());
        let p = Progress::new(&say, live, (4, 2), &[("db-1", "h1"), ("db-2", "h2")]);
        let ev = |l: &str| StepEvent::parse(l).expect(l);
        p.step("db-1", &ev(r#"{"id":"db-1","step":"create-new","phase":"start"}"#));
        p.step("db-1", &ev(r#"{"id":"db-1","step":"create-new","phase":"done","millis":53,"note":"created"}"#));
        p.ended("db-1", "db-1 upgraded".into());
        p.ended("db-2", "db-2 failed".into());
        p.tick_until_ended();
        drop(p);
        said.into_inner().unwrap()
    }

    #[test]
    fn piped_a_line_per_step_event_then_the_result() {
        assert_eq!(run(false), ["  db-1  h1  step create-new started", "  db-1  h1  step create-new done 53 ms", "  db-1 upgraded", "  db-2 failed"]);
    }

    #[test]
    fn on_a_terminal_the_block_is_redrawn_in_place() {
        let said = run(true);
        assert_eq!(said.len(), 4, "{said:?}");
        assert!(!said[0].contains("\x1b[2F") && said[0].contains("step create-new") && said[0].contains("starting"), "{said:?}");
        assert!(said[3].starts_with("\x1b[2F") && said[3].contains("  db-1 upgraded") && said[3].contains("  db-2 failed"), "{said:?}");
        assert!(StepEvent::parse(r#"{"level":"info","msg":"x"}"#).is_none());
    }
}
