//! Whether an upgrade may replace a running container (claim step g): the new version must be
//! later than the running one, and the running one must satisfy the new bundle's constraint.
//! Pure logic: the bundle-wide rollout asks the same question for every container.

use semver::{Version, VersionReq};

pub const VERSION_ANNOTATION: &str = "org.opencontainers.image.version";
pub const CONSTRAINT_ANNOTATION: &str = "io.molt.upgrade.from";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EligibilityError {
    #[error("{whose} config has no {VERSION_ANNOTATION} annotation: molt cannot tell which version it is")]
    MissingVersion { whose: &'static str },
    #[error("{whose} version {value:?} (annotation {VERSION_ANNOTATION}) is not a semantic version: {reason}")]
    BadVersion { whose: &'static str, value: String, reason: String },
    #[error("constraint {value:?} (annotation {CONSTRAINT_ANNOTATION}) is not a semver requirement: {reason}")]
    BadConstraint { value: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    pub eligible: bool,
    pub running: String,
    pub new: String,
    pub constraint: Option<String>,
    /// Which rule decided, in words.
    pub reason: String,
}

/// "v1.2.3" is common in image tags; the rest must be strict semver.
pub fn parse_semver(v: &str) -> Result<Version, semver::Error> {
    Version::parse(v.trim().strip_prefix('v').unwrap_or(v.trim()))
}

fn parse_version(whose: &'static str, v: Option<&str>) -> Result<Version, EligibilityError> {
    let v = v.ok_or(EligibilityError::MissingVersion { whose })?;
    parse_semver(v).map_err(|e| EligibilityError::BadVersion { whose, value: v.to_string(), reason: e.to_string() })
}

pub fn evaluate(running: Option<&str>, new: Option<&str>, constraint: Option<&str>) -> Result<Decision, EligibilityError> {
    let cur = parse_version("running container's", running)?;
    let next = parse_version("new bundle's", new)?;
    let req = match constraint.map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => Some((c.to_string(), VersionReq::parse(c).map_err(|e| EligibilityError::BadConstraint { value: c.into(), reason: e.to_string() })?)),
        None => None,
    };
    let mut d = Decision {
        eligible: false,
        running: cur.to_string(),
        new: next.to_string(),
        constraint: req.as_ref().map(|(s, _)| s.clone()),
        reason: String::new(),
    };
    if next <= cur {
        d.reason = format!("new version {next} is not later than running version {cur}");
        return Ok(d);
    }
    if let Some((text, req)) = &req {
        // Pre-release versions only match requirements that name a pre-release (semver rules).
        if !req.matches(&cur) {
            d.reason = format!("running version {cur} does not satisfy the upgrade's constraint {text:?}");
            return Ok(d);
        }
    }
    d.eligible = true;
    d.reason = match &req {
        Some((text, _)) => format!("{next} is later than {cur}, and {cur} satisfies {text:?}"),
        None => format!("{next} is later than {cur} (no constraint)"),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_and_within_constraint_is_eligible() {
        let d = evaluate(Some("1.4.2"), Some("1.5.0"), Some(">=1.4.0, <2.0.0")).unwrap();
        assert!(d.eligible, "{}", d.reason);
        let d = evaluate(Some("v1.0.0"), Some("v1.0.1"), None).unwrap();
        assert!(d.eligible);
    }

    #[test]
    fn same_or_older_is_refused_with_the_versions_named() {
        let d = evaluate(Some("1.5.0"), Some("1.5.0"), None).unwrap();
        assert!(!d.eligible);
        assert!(d.reason.contains("not later") && d.reason.contains("1.5.0"), "{}", d.reason);
        let d = evaluate(Some("2.0.0"), Some("1.9.9"), None).unwrap();
        assert!(!d.eligible);
        // Pre-release sorts before the release.
        let d = evaluate(Some("1.5.0"), Some("1.5.0-rc.1"), None).unwrap();
        assert!(!d.eligible);
    }

    #[test]
    fn outside_constraint_is_refused() {
        let d = evaluate(Some("1.3.9"), Some("1.5.0"), Some(">=1.4.0, <2.0.0")).unwrap();
        assert!(!d.eligible);
        assert!(d.reason.contains("does not satisfy") && d.reason.contains("1.3.9"), "{}", d.reason);
    }

    #[test]
    fn invalid_inputs_are_errors_not_skips() {
        assert_eq!(
            evaluate(None, Some("1.0.0"), None).unwrap_err(),
            EligibilityError::MissingVersion { whose: "running container's" }
        );
        assert!(matches!(evaluate(Some("1.0"), Some("1.0.1"), None), Err(EligibilityError::BadVersion { .. })));
        assert!(matches!(evaluate(Some("1.0.0"), Some("latest"), None), Err(EligibilityError::BadVersion { .. })));
        assert!(matches!(evaluate(Some("1.0.0"), Some("1.0.1"), Some(">>1")), Err(EligibilityError::BadConstraint { .. })));
    }
}
