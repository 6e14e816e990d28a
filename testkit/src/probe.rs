//! The operator's probe server as a client sees it: `/healthz`, `/readyz` and `/metrics`.

use std::{net::SocketAddr, time::Duration};

use prometheus_parse::{Scrape, Value};

/// An HTTP client for one operator's probe address.
#[derive(Clone, Debug)]
pub struct Probe {
    base: String,
    http: reqwest::Client,
}

impl Probe {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .no_proxy()
                .build()
                .expect("an HTTP client without TLS builds"),
        }
    }

    /// `GET path`: (status code, body), or None if nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        let code = response.status().as_u16();
        Some((code, response.text().await.ok()?))
    }

    /// `GET /metrics` as Prometheus asks for it (classic text format), parsed.
    pub async fn metrics(&self) -> Option<Metrics> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .header("Accept", "text/plain;version=0.0.4")
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Metrics::parse(&response.text().await.ok()?)
    }

    /// One sample of `/metrics`, by name and labels.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics().await?.value(name, labels)
    }

    /// Whether the operator says it holds the Lease (`reserve_leader`).
    pub async fn is_leader(&self) -> Option<bool> {
        self.metric("reserve_leader", &[]).await.map(|v| v == 1.0)
    }

    /// `/readyz` answers 200.
    pub async fn is_ready(&self) -> bool {
        self.get("/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
    }
}

/// A parsed scrape.
#[derive(Debug)]
pub struct Metrics {
    scrape: Scrape,
}

impl Metrics {
    pub fn parse(text: &str) -> Option<Metrics> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Some(Metrics {
            scrape: Scrape::parse(lines).ok()?,
        })
    }

    /// The value of the counter, gauge or untyped sample `name` whose labels include `labels`
    /// (the count, for a histogram).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name, labels).next()
    }

    /// The sum over every sample `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).sum()
    }

    /// The cumulative buckets (upper bound, count) of histogram `name`, summed over every
    /// sample whose labels include `labels`, by bound; empty when there is none.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for sample in
            self.scrape.samples.iter().filter(|s| {
                s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
        {
            let Value::Histogram(counts) = &sample.value else {
                continue;
            };
            for count in counts {
                match buckets.iter_mut().find(|(le, _)| *le == count.less_than) {
                    Some((_, total)) => *total += count.count,
                    None => buckets.push((count.less_than, count.count)),
                }
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }

    /// HELP text per family.
    pub fn help(&self, family: &str) -> Option<&str> {
        self.scrape.docs.get(family).map(String::as_str)
    }

    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.scrape
            .samples
            .iter()
            .filter(move |s| {
                s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                Value::Summary(_) => f64::NAN,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_samples_by_name_and_labels() {
        let text = "# HELP reserve_reconciles_total Reconciles run\n# TYPE reserve_reconciles_total counter\nreserve_reconciles_total{controller=\"customer\"} 3\nreserve_reconciles_total{controller=\"order\"} 4\n# TYPE reserve_leader gauge\nreserve_leader 1\n";
        let metrics = Metrics::parse(text).unwrap();
        assert_eq!(
            metrics.value("reserve_reconciles_total", &[("controller", "order")]),
            Some(4.0)
        );
        assert_eq!(metrics.sum("reserve_reconciles_total", &[]), 7.0);
        assert_eq!(metrics.value("reserve_leader", &[]), Some(1.0));
        assert_eq!(metrics.value("reserve_missing", &[]), None);
        assert_eq!(
            metrics.help("reserve_reconciles_total"),
            Some("Reconciles run")
        );
    }

    #[test]
    fn sums_histogram_buckets_over_matching_samples() {
        let text = "# TYPE d histogram\nd_bucket{verb=\"PATCH\",le=\"0.1\"} 2\nd_bucket{verb=\"PATCH\",le=\"1\"} 5\nd_bucket{verb=\"PATCH\",le=\"+Inf\"} 6\nd_sum{verb=\"PATCH\"} 3\nd_count{verb=\"PATCH\"} 6\nd_bucket{verb=\"GET\",le=\"0.1\"} 7\nd_bucket{verb=\"GET\",le=\"1\"} 7\nd_bucket{verb=\"GET\",le=\"+Inf\"} 7\n";
        let metrics = Metrics::parse(text).unwrap();
        assert_eq!(
            metrics.histogram("d", &[("verb", "PATCH")]),
            vec![(0.1, 2.0), (1.0, 5.0), (f64::INFINITY, 6.0)]
        );
        assert_eq!(
            metrics.histogram("d", &[]),
            vec![(0.1, 9.0), (1.0, 12.0), (f64::INFINITY, 13.0)]
        );
        assert!(metrics.histogram("e", &[]).is_empty());
    }
}
