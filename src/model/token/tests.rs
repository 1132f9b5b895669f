//! Unit tests of the token graph, the twin and the OWC builder.

use super::*;
use crate::model::activation::{Activation, ActivationFn};
use ndarray::array;
use ndarray::{Array2, Axis};
use rand::SeedableRng;

fn close(a: &Array2<f64>, b: &Array2<f64>) {
    assert_eq!(a.dim(), b.dim());
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
    }
}

fn one(b: TokenAdapterBuilder, x: Vec<Array2<f64>>) -> Array2<f64> {
    let ad = b.build().unwrap();
    evaluate_tokens(&ad, &x).unwrap().output
}

#[test]
fn tokenwise_ops_by_hand() {
    let x = array![[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]];
    // linear: W = [[1, 1], [2, -1], [0, 3]], b = [1, 0, -1]
    let mut b = TokenAdapterBuilder::new(3);
    let i = b.input("x", 2).unwrap();
    let w = array![[1.0, 1.0], [2.0, -1.0], [0.0, 3.0]];
    b.node(
        "l",
        TokenOp::Linear {
            weight: w,
            bias: Some(array![1.0, 0.0, -1.0]),
        },
        &[i],
    )
    .unwrap();
    let y = one(b, vec![x.clone()]);
    close(
        &y,
        &array![[4.0, 0.0, 5.0], [3.0, 7.0, -4.0], [1.5, 1.0, -1.0]],
    );

    // low rank: A = [[1, -1]], B = [[2], [1]], scale 0.5
    let mut b = TokenAdapterBuilder::new(3);
    let i = b.input("x", 2).unwrap();
    b.node(
        "lr",
        TokenOp::LowRank {
            a: array![[1.0, -1.0]],
            b: array![[2.0], [1.0]],
            scale: 0.5,
            bias: None,
        },
        &[i],
    )
    .unwrap();
    close(
        &one(b, vec![x.clone()]),
        &array![[-1.0, -0.5], [4.0, 2.0], [0.5, 0.25]],
    );

    // affine, then square, then residual, then scale
    let mut b = TokenAdapterBuilder::new(3);
    let i = b.input("x", 2).unwrap();
    let a = b
        .node(
            "aff",
            TokenOp::Affine {
                mul: array![2.0, -1.0],
                add: array![0.0, 1.0],
            },
            &[i],
        )
        .unwrap();
    let sq = Activation::fit(ActivationFn::Square, -10.0, 10.0, 2).unwrap();
    let p = b.node("sq", TokenOp::Poly(sq), &[a]).unwrap();
    let r = b.node("res", TokenOp::Add, &[p, i]).unwrap();
    b.node("s", TokenOp::Scale(2.0), &[r]).unwrap();
    // aff: [[2,-1],[6,2],[1,1]]; sq: [[4,1],[36,4],[1,1]]; +x: [[5,3],[39,3],[1.5,1]]
    close(
        &one(b, vec![x.clone()]),
        &array![[10.0, 6.0], [78.0, 6.0], [3.0, 2.0]],
    );

    // pooling
    for (pool, want) in [
        (Pooling::Cls, array![[1.0, 2.0]]),
        (Pooling::Mean, array![[1.5, 1.0 / 3.0]]),
    ] {
        let mut b = TokenAdapterBuilder::new(3);
        let i = b.input("x", 2).unwrap();
        b.node("p", TokenOp::Pool(pool), &[i]).unwrap();
        close(&one(b, vec![x.clone()]), &want);
    }
}

#[test]
fn linear_attention_by_hand() {
    // T = 2, r = 2, one head: qkv picks Q = x, K = x, V = x; scale 1; mix = [[1, 0], [1, 1]]
    // with bias [0, 1]; proj = identity.
    let x = array![[1.0, 0.0], [1.0, 2.0]];
    let mut qkv = Array2::zeros((6, 2));
    for blk in 0..3 {
        qkv[[2 * blk, 0]] = 1.0;
        qkv[[2 * blk + 1, 1]] = 1.0;
    }
    let at = LinearAttention {
        heads: 1,
        qkv,
        qkv_bias: None,
        scale: 1.0,
        mix: array![[1.0, 0.0], [1.0, 1.0]],
        mix_bias: Some(array![0.0, 1.0]),
        proj: Array2::eye(2),
        proj_bias: None,
    };
    // S = x x^T = [[1, 1], [1, 5]]; S' = S M^T + [0, 1] = [[1, 3], [1, 7]];
    // S' V = [[1*1+3*1, 3*2], [1+7, 14]] = [[4, 6], [8, 14]]
    close(&at.apply(x.view()), &array![[4.0, 6.0], [8.0, 14.0]]);

    // two heads of width 1: head h sees column h only.
    let mut at2 = at.clone();
    at2.heads = 2;
    // head 0: q = k = v = [1, 1]: S = [[1,1],[1,1]], S' = [[1,3],[1,3]], S'V = [4, 4]
    // head 1: q = k = v = [0, 2]: S = [[0,0],[0,4]], S' = [[0,1],[0,5]], S'V = [2, 10]
    close(&at2.apply(x.view()), &array![[4.0, 2.0], [4.0, 10.0]]);
}

#[test]
fn owc_recurrence_matches_a_manual_loop() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let sh = OwcShape {
        tokens: 5,
        d: 6,
        r: 4,
        heads: 2,
        taps: 2,
        classes: 3,
    };
    let ad = random_owc(&mut rng, sh).unwrap();
    let xs = uniform_tokens(&mut rng, &ad, 1).remove(0);
    let got = evaluate_tokens(&ad, &xs).unwrap().output;
    // manual: rebuild each block's op sequence from the nodes
    let node = |n: &str| {
        ad.nodes()
            .iter()
            .find(|x| x.name == n)
            .map(|x| x.op.clone())
            .unwrap()
    };
    let lin = |op: TokenOp, x: &Array2<f64>| match op {
        TokenOp::Linear { weight, bias } => rowwise_linear(x.view(), &weight, bias.as_ref()),
        TokenOp::Affine { mul, add } => x * &mul + &add,
        TokenOp::Poly(a) => x.mapv(|v| a.eval(v)),
        TokenOp::LinearAttention(at) => at.apply(x.view()),
        _ => unreachable!(),
    };
    let mut out: Option<Array2<f64>> = None;
    for i in 1..=2 {
        let inp = match &out {
            None => xs[0].clone(),
            Some(o) => o + &xs[i - 1],
        };
        let p = format!("a{i}");
        let x1 = lin(node(&format!("{p}.down")), &inp);
        let at = lin(
            node(&format!("{p}.attn")),
            &lin(node(&format!("{p}.norm1")), &x1),
        );
        let x2 = &x1 + &at;
        let h = lin(node(&format!("{p}.norm2")), &x2);
        let h = lin(node(&format!("{p}.fc1")), &h);
        let h = lin(node(&format!("{p}.act")), &h);
        let x3 = &x2 + &lin(node(&format!("{p}.fc2")), &h);
        out = Some(lin(node(&format!("{p}.up")), &x3) + &inp);
    }
    let fin = lin(node("final.norm"), &(&xs[2] + &out.unwrap()));
    let pooled = fin.mean_axis(Axis(0)).unwrap().insert_axis(Axis(0));
    let want = lin(node("head"), &pooled);
    close(&got, &want);
    assert_eq!(got.dim(), (1, 3));
}

#[test]
fn shape_errors_name_the_node() {
    let mut b = TokenAdapterBuilder::new(4);
    let i = b.input("x", 3).unwrap();
    let p = b.node("p", TokenOp::Pool(Pooling::Cls), &[i]).unwrap();
    let e = b
        .node("p2", TokenOp::Pool(Pooling::Mean), &[p])
        .unwrap_err();
    assert!(e.to_string().contains("p2"), "{e}");
    let e = b
        .node(
            "l",
            TokenOp::Linear {
                weight: Array2::zeros((2, 5)),
                bias: None,
            },
            &[i],
        )
        .unwrap_err();
    assert!(e.to_string().contains("node l"), "{e}");
    let e = evaluate_tokens(
        &{
            let mut b = TokenAdapterBuilder::new(4);
            let i = b.input("x", 3).unwrap();
            b.node("s", TokenOp::Scale(1.0), &[i]).unwrap();
            b.build().unwrap()
        },
        &[Array2::zeros((3, 3))],
    )
    .unwrap_err();
    assert!(e.to_string().contains("4x3"), "{e}");
}
