//! Per-operator timing: where a model's time goes inside a backend. It is what
//! performance work starts from (which ops dominate, which run slowly).

use serde::Serialize;

/// Median time of one node of the optimised graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeTime {
    /// Node name in the optimised graph (tract's, derived from the ONNX names).
    pub node: String,
    /// Operator as the backend runs it, e.g. `Conv`, `OptMatMul`, `DepthWise`.
    pub op: String,
    /// Median milliseconds over the profiled runs.
    pub ms: f64,
}

/// Time per operator type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpTime {
    /// Operator.
    pub op: String,
    /// Nodes of that operator.
    pub nodes: usize,
    /// Sum of the nodes' medians, milliseconds.
    pub ms: f64,
    /// Share of the summed node time, 0..1.
    pub share: f64,
}

/// A model's time, node by node and per operator type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Median of the whole runs, milliseconds (includes scheduling between nodes).
    pub total_ms: f64,
    /// Runs profiled.
    pub runs: usize,
    /// Per operator type, largest first.
    pub by_op: Vec<OpTime>,
    /// Per node, slowest first.
    pub nodes: Vec<NodeTime>,
}

/// Median of unsorted samples (0 when empty).
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

impl Profile {
    /// Builds a profile from per-run samples: `per_node[i]` holds node `i`'s time
    /// in each run, `totals` each run's whole time.
    pub fn from_samples(
        nodes: Vec<(String, String)>,
        mut per_node: Vec<Vec<f64>>,
        mut totals: Vec<f64>,
    ) -> Profile {
        let runs = totals.len();
        let mut times: Vec<NodeTime> = nodes
            .into_iter()
            .zip(per_node.iter_mut())
            .map(|((node, op), samples)| NodeTime {
                node,
                op,
                ms: median(samples),
            })
            .collect();
        times.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.node.cmp(&b.node)));
        let sum: f64 = times.iter().map(|t| t.ms).sum();
        let mut by_op: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
        for t in &times {
            let e = by_op.entry(&t.op).or_default();
            e.0 += 1;
            e.1 += t.ms;
        }
        let mut by_op: Vec<OpTime> = by_op
            .into_iter()
            .map(|(op, (nodes, ms))| OpTime {
                op: op.to_string(),
                nodes,
                ms,
                share: if sum > 0.0 { ms / sum } else { 0.0 },
            })
            .collect();
        by_op.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.op.cmp(&b.op)));
        Profile {
            total_ms: median(&mut totals),
            runs,
            by_op,
            nodes: times,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_per_node_and_shares_per_op() {
        let p = Profile::from_samples(
            vec![
                ("a".into(), "Conv".into()),
                ("b".into(), "Add".into()),
                ("c".into(), "Conv".into()),
            ],
            vec![
                vec![3.0, 1.0, 2.0],
                vec![1.0, 1.0, 1.0],
                vec![5.0, 9.0, 7.0],
            ],
            vec![10.0, 12.0, 11.0],
        );
        assert_eq!(p.runs, 3);
        assert_eq!(p.total_ms, 11.0);
        let order: Vec<(&str, f64)> = p.nodes.iter().map(|n| (n.node.as_str(), n.ms)).collect();
        assert_eq!(order, [("c", 7.0), ("a", 2.0), ("b", 1.0)]);
        assert_eq!(p.by_op[0].op, "Conv");
        assert_eq!(p.by_op[0].nodes, 2);
        assert!((p.by_op[0].share - 0.9).abs() < 1e-12);
        assert!((p.by_op[1].share - 0.1).abs() < 1e-12);
    }

    #[test]
    fn median_of_even_and_empty_sets() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
