//! `kind = "docker"`: inspect the running container for the image tag it
//! replaces, make sure the tag to go back to is available (pulling it before
//! anything stops), then stop and remove the container and run
//! `image:{to_version}` under the same name with `run_args`.
//!
//! Without a known `{to_version}` the previous local tag of the image is
//! used: the greatest tag that sorts before the live one.

use super::process::substitute;
use super::runner::{first_line, Act, Budget, Runner};
use super::symlink::version_cmp;
use super::{ExecResult, Vars};

/// The keys of a `docker` rollback.
#[derive(Debug, Clone, Copy)]
pub struct Docker<'a> {
    /// Container name.
    pub container: &'a str,
    /// Image without tag.
    pub image: &'a str,
    /// Extra `docker run` arguments (templates).
    pub run_args: &'a [String],
    /// docker program.
    pub docker: &'a str,
}

impl Docker<'_> {
    fn docker(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.docker.to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv
    }

    /// Inspect, choose the tag, check it is there; returns the replacement.
    pub async fn prepare(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, String> {
        let report = r
            .probe(
                self.docker(&["inspect", "--format", "{{.Config.Image}}", self.container]),
                None,
            )
            .await;
        if !report.ok {
            return Err(format!(
                "container {} cannot be inspected: {}; nothing was changed",
                self.container,
                report.error.as_deref().unwrap_or("unknown error")
            ));
        }
        let running = first_line(&report.stdout);
        let (repo, live) = split_tag(&running);
        if repo != self.image {
            tracing::warn!(container = %self.container, running = %running, image = %self.image, "the container runs another image than configured");
        }
        let live = live.unwrap_or("latest").to_string();
        r.result.from_version = Some(live.clone());

        let mut acts = Vec::new();
        let to = match vars.to_version.clone() {
            Some(to) => {
                let wanted = format!("{}:{to}", self.image);
                let present = r
                    .probe(
                        self.docker(&["image", "inspect", "--format", "{{.Id}}", &wanted]),
                        None,
                    )
                    .await;
                if !present.ok {
                    acts.push(Act::run(self.docker(&["pull", &wanted])));
                }
                to
            }
            None => {
                let out = r
                    .run(
                        self.docker(&["image", "ls", "--format", "{{.Tag}}", self.image]),
                        None,
                    )
                    .await?;
                out.lines()
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && *t != "<none>")
                    .filter(|t| version_cmp(t, &live) == std::cmp::Ordering::Less)
                    .max_by(|a, b| version_cmp(a, b))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        format!(
                            "the version to go back to is unknown and no local tag of {} sorts before {live}; nothing was changed",
                            self.image
                        )
                    })?
            }
        };
        if to == live {
            return Err(format!(
                "container {} already runs {}:{live}; nothing to roll back to",
                self.container, self.image
            ));
        }
        r.result.to_version = Some(to.clone());
        let found = Vars {
            from_version: Some(live),
            to_version: Some(to.clone()),
            ..vars.clone()
        };
        let run_args = substitute(self.run_args, &found)
            .map_err(|e| format!("run_args cannot be used: {e}; nothing was changed"))?;
        acts.push(Act::run(self.docker(&["stop", self.container])));
        acts.push(Act::run(self.docker(&["rm", self.container])));
        let mut run = self.docker(&["run", "-d", "--name", self.container]);
        run.extend(run_args);
        run.push(format!("{}:{to}", self.image));
        acts.push(Act::run(run));
        Ok(acts)
    }

    /// Replace the container.
    pub async fn run(&self, vars: &Vars, budget: Budget) -> ExecResult {
        let mut r = Runner::new(budget, vars);
        let acts = self.prepare(vars, &mut r).await;
        r.finish(acts).await
    }
}

/// `registry:5000/app:1.2` -> (`registry:5000/app`, `Some("1.2")`); a digest
/// (`@sha256:...`) is not a tag.
pub fn split_tag(image: &str) -> (&str, Option<&str>) {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], Some(&image[name_start + i + 1..])),
        None => (image, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_table() {
        assert_eq!(split_tag("app:1.2"), ("app", Some("1.2")));
        assert_eq!(
            split_tag("registry:5000/app:1.2"),
            ("registry:5000/app", Some("1.2"))
        );
        assert_eq!(split_tag("registry:5000/app"), ("registry:5000/app", None));
        assert_eq!(split_tag("app@sha256:abc"), ("app", None));
        assert_eq!(split_tag("app"), ("app", None));
    }
}
