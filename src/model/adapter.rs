//! [`Adapter`]: an ordered, shape-checked graph of [`Op`]s, and its builder.

use std::collections::HashSet;

use ndarray::{Array1, Array2};

use super::activation::Activation;
use super::layer::{InputSpec, Node, NodeRef, Op};
use crate::{Error, Result};

/// A PEFT adapter as an ordered DAG of operations on named input vectors.
///
/// Every node references adapter inputs or earlier nodes only, so the node list is a
/// topological order; the output of the adapter is the output of the last node. Shapes
/// are checked and every parameter is checked finite when a node is added, and
/// [`AdapterBuilder::build`] checks that every input and node contributes to the output.
/// An `Adapter` cannot be mutated after it is built.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    inputs: Vec<InputSpec>,
    nodes: Vec<Node>,
}

impl Adapter {
    /// The declared inputs, in order (the order of the `inputs` argument of the
    /// evaluators).
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// The nodes in topological order; the last one is the output.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Widths of the inputs, in order.
    pub fn input_dims(&self) -> Vec<usize> {
        self.inputs.iter().map(|i| i.dim).collect()
    }

    /// Width of the output vector (the last node's `out_dim`).
    pub fn output_dim(&self) -> usize {
        self.nodes.last().map_or(0, |n| n.out_dim)
    }

    /// Width of the value a [`NodeRef`] designates, or `None` if it is out of range.
    pub fn dim_of(&self, r: NodeRef) -> Option<usize> {
        match r {
            NodeRef::Input(i) => self.inputs.get(i).map(|s| s.dim),
            NodeRef::Node(j) => self.nodes.get(j).map(|n| n.out_dim),
        }
    }

    /// Finds an input or node by name.
    pub fn find(&self, name: &str) -> Option<NodeRef> {
        find_name(&self.inputs, &self.nodes, name)
    }

    /// Name of the input or node a [`NodeRef`] designates (`"?"` if out of range).
    pub fn name_of(&self, r: NodeRef) -> &str {
        match r {
            NodeRef::Input(i) => self.inputs.get(i).map_or("?", |s| s.name.as_str()),
            NodeRef::Node(j) => self.nodes.get(j).map_or("?", |n| n.name.as_str()),
        }
    }

    /// Total number of scalar parameters.
    pub fn param_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.param_count()).sum()
    }

    /// The largest activation degree in the graph (0 if there is no `Poly` node).
    pub fn max_poly_degree(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Poly(a) => Some(a.degree()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// A short multi-line human-readable description: inputs, one line per node with its
    /// operation, operands and output width, and the parameter count.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let ins: Vec<String> = self
            .inputs
            .iter()
            .map(|i| format!("{}[{}]", i.name, i.dim))
            .collect();
        s.push_str(&format!(
            "adapter: inputs {} -> output [{}], {} nodes, {} parameters\n",
            ins.join(", "),
            self.output_dim(),
            self.nodes.len(),
            self.param_count()
        ));
        for n in &self.nodes {
            let args: Vec<&str> = n.inputs.iter().map(|&r| self.name_of(r)).collect();
            let detail = match &n.op {
                Op::Linear { weight, bias } => format!(
                    "linear {}x{}{}",
                    weight.nrows(),
                    weight.ncols(),
                    if bias.is_some() { " +bias" } else { "" }
                ),
                Op::LowRank { a, b, scale, bias } => format!(
                    "low_rank {}x{} rank {} scale {}{}",
                    b.nrows(),
                    a.ncols(),
                    a.nrows(),
                    scale,
                    if bias.is_some() { " +bias" } else { "" }
                ),
                Op::Affine { mul, .. } => format!("affine [{}]", mul.len()),
                Op::Scale(x) => format!("scale {x}"),
                Op::Poly(a) => format!(
                    "poly {} degree {} on [{}, {}]",
                    a.func.map_or("explicit", |f| f.name()),
                    a.degree(),
                    a.lo,
                    a.hi
                ),
                Op::Add => "add".to_string(),
                Op::Concat => "concat".to_string(),
            };
            s.push_str(&format!(
                "  {} = {}({}) -> [{}]\n",
                n.name,
                detail,
                args.join(", "),
                n.out_dim
            ));
        }
        s
    }
}

fn find_name(inputs: &[InputSpec], nodes: &[Node], name: &str) -> Option<NodeRef> {
    if let Some(i) = inputs.iter().position(|s| s.name == name) {
        return Some(NodeRef::Input(i));
    }
    nodes.iter().position(|n| n.name == name).map(NodeRef::Node)
}

/// Builds an [`Adapter`] node by node, checking shapes and values as it goes.
///
/// ```
/// use hepeft::model::{ActivationFn, Activation, AdapterBuilder};
/// use ndarray::Array2;
/// # fn main() -> hepeft::Result<()> {
/// let mut b = AdapterBuilder::new();
/// let x = b.input("cls", 4)?;
/// let h = b.linear(x, Array2::eye(4), None)?;
/// let h = b.poly(h, Activation::fit(ActivationFn::Gelu, -4.0, 4.0, 7)?)?;
/// let y = b.add(&[x, h])?;
/// let _logits = b.linear(y, Array2::zeros((2, 4)), None)?;
/// let adapter = b.build()?;
/// assert_eq!(adapter.output_dim(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct AdapterBuilder {
    inputs: Vec<InputSpec>,
    nodes: Vec<Node>,
}

impl AdapterBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares an input vector of width `dim` and returns a reference to it.
    ///
    /// # Errors
    /// [`Error::Model`] if `name` is empty or already used, or `dim == 0`.
    pub fn input(&mut self, name: &str, dim: usize) -> Result<NodeRef> {
        self.check_name(name)?;
        if dim == 0 {
            return Err(Error::model(format!("input '{name}' has width 0")));
        }
        self.inputs.push(InputSpec {
            name: name.to_string(),
            dim,
        });
        Ok(NodeRef::Input(self.inputs.len() - 1))
    }

    /// Appends a node named `name` computing `op` on `inputs` and returns a reference to it.
    ///
    /// # Errors
    /// [`Error::Model`] for a duplicate or empty name, an operand that does not exist yet,
    /// or a wrong operand count; [`Error::DimensionMismatch`] when shapes disagree;
    /// [`Error::InvalidValue`] for a non-finite parameter.
    pub fn node(&mut self, name: &str, op: Op, inputs: &[NodeRef]) -> Result<NodeRef> {
        self.check_name(name)?;
        let context = format!("node '{name}'");
        op.validate(&context)?;
        let mut dims = Vec::with_capacity(inputs.len());
        for &r in inputs {
            let d = match r {
                NodeRef::Input(i) => self.inputs.get(i).map(|s| s.dim),
                NodeRef::Node(j) => self.nodes.get(j).map(|n| n.out_dim),
            };
            let d = d.ok_or_else(|| {
                Error::model(format!("{context}: operand {r:?} does not exist (yet)"))
            })?;
            dims.push(d);
        }
        let out_dim = op.out_dim(&dims, &context)?;
        if out_dim == 0 {
            return Err(Error::model(format!("{context}: output width is 0")));
        }
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
            out_dim,
        });
        Ok(NodeRef::Node(self.nodes.len() - 1))
    }

    fn auto_name(&self, kind: &str) -> String {
        let mut i = self.nodes.len();
        loop {
            let name = format!("{kind}{i}");
            if find_name(&self.inputs, &self.nodes, &name).is_none() {
                return name;
            }
            i += 1;
        }
    }

    fn check_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::model("empty input or node name"));
        }
        if find_name(&self.inputs, &self.nodes, name).is_some() {
            return Err(Error::model(format!(
                "duplicate input or node name '{name}'"
            )));
        }
        Ok(())
    }

    /// Appends `y = weight x + bias` (`weight` is `out x in`), auto-named `linear<k>`.
    ///
    /// # Errors
    /// As [`AdapterBuilder::node`].
    pub fn linear(
        &mut self,
        x: NodeRef,
        weight: Array2<f64>,
        bias: Option<Array1<f64>>,
    ) -> Result<NodeRef> {
        let name = self.auto_name("linear");
        self.node(&name, Op::Linear { weight, bias }, &[x])
    }

    /// Appends `y = scale * b (a x) + bias` (`a` is `r x in`, `b` is `out x r`),
    /// auto-named `low_rank<k>`.
    ///
    /// # Errors
    /// As [`AdapterBuilder::node`].
    pub fn low_rank(
        &mut self,
        x: NodeRef,
        a: Array2<f64>,
        b: Array2<f64>,
        scale: f64,
        bias: Option<Array1<f64>>,
    ) -> Result<NodeRef> {
        let name = self.auto_name("low_rank");
        self.node(&name, Op::LowRank { a, b, scale, bias }, &[x])
    }

    /// Appends the per-feature map `y_i = mul_i x_i + add_i`, auto-named `affine<k>`.
    ///
    /// # Errors
    /// As [`AdapterBuilder::node`].
    pub fn affine(&mut self, x: NodeRef, mul: Array1<f64>, add: Array1<f64>) -> Result<NodeRef> {
        let name = self.auto_name("affine");
        self.node(&name, Op::Affine { mul, add }, &[x])
    }

    /// Appends `y = s x`, auto-named `scale<k>`.
    ///
    /// # Errors
    /// As [`AdapterBuilder::node`].
    pub fn scale(&mut self, x: NodeRef, s: f64) -> Result<NodeRef> {
        let name = self.auto_name("scale");
        self.node(&name, Op::Scale(s), &[x])
    }

    /// Appends the elementwise polynomial `act`, auto-named `poly<k>`.
    ///
    /// # Errors
    /// As [`AdapterBuilder::node`].
    pub fn poly(&mut self, x: NodeRef, act: Activation) -> Result<NodeRef> {
        let name = self.auto_name("poly");
        self.node(&name, Op::Poly(act), &[x])
    }

    /// Appends the elementwise sum of two or more equal-width values, auto-named `add<k>`.
    ///
    /// # Errors
    /// As [`AdapterBuilder::node`].
    pub fn add(&mut self, xs: &[NodeRef]) -> Result<NodeRef> {
        let name = self.auto_name("add");
        self.node(&name, Op::Add, xs)
    }

    /// Appends the concatenation of one or more values, auto-named `concat<k>`.
    ///
    /// # Errors
    /// As [`AdapterBuilder::node`].
    pub fn concat(&mut self, xs: &[NodeRef]) -> Result<NodeRef> {
        let name = self.auto_name("concat");
        self.node(&name, Op::Concat, xs)
    }

    /// Finishes the adapter; its output is the last node added.
    ///
    /// # Errors
    /// [`Error::Model`] if there is no input or no node, or if some input or node does not
    /// contribute to the output (dead code is almost always a wiring mistake, and an unused
    /// input would make a client encrypt and upload data for nothing).
    pub fn build(self) -> Result<Adapter> {
        if self.inputs.is_empty() {
            return Err(Error::model("adapter has no input"));
        }
        if self.nodes.is_empty() {
            return Err(Error::model("adapter has no node"));
        }
        let mut live_nodes: HashSet<usize> = HashSet::new();
        let mut live_inputs: HashSet<usize> = HashSet::new();
        let mut stack = vec![self.nodes.len() - 1];
        while let Some(j) = stack.pop() {
            if !live_nodes.insert(j) {
                continue;
            }
            if let Some(node) = self.nodes.get(j) {
                for r in &node.inputs {
                    match *r {
                        NodeRef::Input(i) => {
                            live_inputs.insert(i);
                        }
                        NodeRef::Node(k) => stack.push(k),
                    }
                }
            }
        }
        if let Some(i) = (0..self.inputs.len()).find(|i| !live_inputs.contains(i)) {
            return Err(Error::model(format!(
                "input '{}' does not reach the output",
                self.inputs[i].name
            )));
        }
        if let Some(j) = (0..self.nodes.len()).find(|j| !live_nodes.contains(j)) {
            return Err(Error::model(format!(
                "node '{}' does not reach the output (the output is the last node, '{}')",
                self.nodes[j].name,
                self.nodes[self.nodes.len() - 1].name
            )));
        }
        Ok(Adapter {
            inputs: self.inputs,
            nodes: self.nodes,
        })
    }
}
