//! The token graph ([`TokenAdapter`]) and its builder.

use crate::model::layer::{InputSpec, NodeRef};
use crate::{Error, Result};

use super::ops::TokenOp;

/// One node of a token graph.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenNode {
    /// Unique name (shared namespace with the inputs).
    pub name: String,
    /// The operation.
    pub op: TokenOp,
    /// Operands: inputs or earlier nodes.
    pub inputs: Vec<NodeRef>,
    /// Output shape `(rows, width)`.
    pub shape: (usize, usize),
}

/// A token-level adapter: a shape-checked DAG of [`TokenOp`]s on `T x d` inputs; the last
/// node is the output. Immutable once built.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenAdapter {
    tokens: usize,
    inputs: Vec<InputSpec>,
    nodes: Vec<TokenNode>,
}

impl TokenAdapter {
    /// Number of tokens `T` of every input.
    pub fn tokens(&self) -> usize {
        self.tokens
    }
    /// The inputs (each `T x dim`), in evaluation order.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }
    /// The nodes in topological order; the last is the output.
    pub fn nodes(&self) -> &[TokenNode] {
        &self.nodes
    }
    /// Output shape `(rows, width)`.
    pub fn output_shape(&self) -> (usize, usize) {
        self.nodes.last().map_or((0, 0), |n| n.shape)
    }
    /// Shape of an input or node value.
    pub fn shape_of(&self, r: NodeRef) -> Option<(usize, usize)> {
        match r {
            NodeRef::Input(i) => self.inputs.get(i).map(|s| (self.tokens, s.dim)),
            NodeRef::Node(j) => self.nodes.get(j).map(|n| n.shape),
        }
    }
    /// Name of an input or node.
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
    /// A multi-line description: one line per node.
    pub fn summary(&self) -> String {
        let ins: Vec<String> = self
            .inputs
            .iter()
            .map(|i| format!("{}[{}x{}]", i.name, self.tokens, i.dim))
            .collect();
        let (r, w) = self.output_shape();
        let mut s = format!(
            "token adapter: inputs {} -> output [{r}x{w}], {} nodes, {} parameters\n",
            ins.join(", "),
            self.nodes.len(),
            self.param_count()
        );
        for n in &self.nodes {
            let args: Vec<&str> = n.inputs.iter().map(|&r| self.name_of(r)).collect();
            s.push_str(&format!(
                "  {} = {}({}) -> [{}x{}]\n",
                n.name,
                n.op.kind(),
                args.join(", "),
                n.shape.0,
                n.shape.1
            ));
        }
        s
    }
}

/// Builds a [`TokenAdapter`] node by node, checking shapes as it goes.
#[derive(Clone, Debug)]
pub struct TokenAdapterBuilder {
    tokens: usize,
    inputs: Vec<InputSpec>,
    nodes: Vec<TokenNode>,
}

impl TokenAdapterBuilder {
    /// A builder for inputs of `tokens` rows.
    pub fn new(tokens: usize) -> Self {
        TokenAdapterBuilder {
            tokens,
            inputs: Vec::new(),
            nodes: Vec::new(),
        }
    }

    fn name_taken(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i.name == name) || self.nodes.iter().any(|n| n.name == name)
    }

    /// Declares an input `T x dim`.
    ///
    /// # Errors
    /// [`Error::Model`] for a duplicate name, a zero width, or an input after a node.
    pub fn input(&mut self, name: &str, dim: usize) -> Result<NodeRef> {
        if dim == 0 {
            return Err(Error::model(format!(
                "token input {name}: width must be >= 1"
            )));
        }
        if self.name_taken(name) {
            return Err(Error::model(format!("duplicate name {name:?}")));
        }
        self.inputs.push(InputSpec {
            name: name.to_string(),
            dim,
        });
        Ok(NodeRef::Input(self.inputs.len() - 1))
    }

    /// Appends a node.
    ///
    /// # Errors
    /// Shape and parameter errors naming the node; unknown operands.
    pub fn node(&mut self, name: &str, op: TokenOp, inputs: &[NodeRef]) -> Result<NodeRef> {
        if self.name_taken(name) {
            return Err(Error::model(format!("duplicate name {name:?}")));
        }
        let mut shapes = Vec::with_capacity(inputs.len());
        for &r in inputs {
            let sh = match r {
                NodeRef::Input(i) => self.inputs.get(i).map(|s| (self.tokens, s.dim)),
                NodeRef::Node(j) => self.nodes.get(j).map(|n| n.shape),
            };
            shapes.push(sh.ok_or_else(|| {
                Error::model(format!("node {name}: operand {r:?} does not exist (yet)"))
            })?);
        }
        let shape = op.out_shape(&shapes, self.tokens, &format!("node {name}"))?;
        self.nodes.push(TokenNode {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
            shape,
        });
        Ok(NodeRef::Node(self.nodes.len() - 1))
    }

    /// Finishes the graph.
    ///
    /// # Errors
    /// [`Error::Model`] when there are no tokens, inputs or nodes, or when an input or node
    /// does not contribute to the output.
    pub fn build(self) -> Result<TokenAdapter> {
        if self.tokens == 0 {
            return Err(Error::model("a token adapter needs at least 1 token"));
        }
        if self.inputs.is_empty() || self.nodes.is_empty() {
            return Err(Error::model(
                "a token adapter needs at least one input and one node",
            ));
        }
        let mut used_in = vec![false; self.inputs.len()];
        let mut used = vec![false; self.nodes.len()];
        let last = self.nodes.len() - 1;
        used[last] = true;
        for j in (0..self.nodes.len()).rev() {
            if !used[j] {
                return Err(Error::model(format!(
                    "node {} does not contribute to the output",
                    self.nodes[j].name
                )));
            }
            for &r in &self.nodes[j].inputs {
                match r {
                    NodeRef::Input(i) => used_in[i] = true,
                    NodeRef::Node(k) => used[k] = true,
                }
            }
        }
        if let Some(i) = used_in.iter().position(|u| !u) {
            return Err(Error::model(format!(
                "input {} does not contribute to the output",
                self.inputs[i].name
            )));
        }
        Ok(TokenAdapter {
            tokens: self.tokens,
            inputs: self.inputs,
            nodes: self.nodes,
        })
    }
}
