//! The few distribution functions the control limits need: the normal quantile, and the
//! quantiles of the F and χ² distributions.

/// The quantile of the standard normal distribution at `p` in (0, 1) (Wichura's AS241,
/// accurate to about 1e-16).
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 { -x } else { x }
}

fn poly(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().rev().fold(0.0, |acc, c| acc * x + c)
}

// AS241's published coefficients, kept digit for digit as printed.
#[allow(clippy::excessive_precision)]
const A: [f64; 8] = [
    3.387_132_872_796_366_5,
    133.141_667_891_784_38,
    1_971.590_950_306_551_3,
    13_731.693_765_509_461,
    45_921.953_931_549_87,
    67_265.770_927_008_7,
    33_430.575_583_588_13,
    2_509.080_928_730_122_7,
];
const B: [f64; 8] = [
    1.0,
    42.313_330_701_600_91,
    687.187_007_492_057_9,
    5_394.196_021_424_751,
    21_213.794_301_586_597,
    39_307.895_800_092_71,
    28_729.085_735_721_943,
    5_226.495_278_852_545,
];
const C: [f64; 8] = [
    1.423_437_110_749_683_5,
    4.630_337_846_156_546,
    5.769_497_221_460_691,
    3.647_848_324_763_204_5,
    1.270_458_252_452_368_4,
    0.241_780_725_177_450_6,
    0.022_723_844_989_269_184,
    7.745_450_142_783_414e-4,
];
const D: [f64; 8] = [
    1.0,
    2.053_191_626_637_759,
    1.676_384_830_183_803_8,
    0.689_767_334_985_1,
    0.148_103_976_427_480_08,
    0.015_198_666_563_616_457,
    5.475_938_084_995_345e-4,
    1.050_750_071_644_416_9e-9,
];
const E: [f64; 8] = [
    6.657_904_643_501_103,
    5.463_784_911_164_114,
    1.784_826_539_917_291_3,
    0.296_560_571_828_504_9,
    0.026_532_189_526_576_124,
    0.001_242_660_947_388_078_4,
    2.711_555_568_743_487_6e-5,
    2.010_334_399_292_288_1e-7,
];
const F: [f64; 8] = [
    1.0,
    0.599_832_206_555_888,
    0.136_929_880_922_735_8,
    0.014_875_361_290_850_615,
    7.868_691_311_456_133e-4,
    1.846_318_317_510_054_8e-5,
    1.421_511_758_316_446e-7,
    2.043_131_013_512_6e-15,
];

/// ln Γ(x) for x > 0 (Lanczos, g = 7, about 15 digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The regularized lower incomplete gamma function P(a, x).
pub fn gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let ln_pre = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (sum.ln() + ln_pre).exp()
    } else {
        1.0 - continued_fraction(
            |i| {
                if i == 0 {
                    (0.0, x + 1.0 - a)
                } else {
                    let i = i as f64;
                    (-i * (i - a), x + 2.0 * i + 1.0 - a)
                }
            },
            ln_pre,
        )
    }
}

/// The regularized incomplete beta function I_x(a, b).
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        beta_cf(a, b, x, ln_front) / a
    } else {
        1.0 - beta_cf(b, a, 1.0 - x, ln_front) / b
    }
}

/// exp(ln_front) times the continued fraction of the incomplete beta (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64, ln_front: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    ln_front.exp() * h
}

/// exp(ln_front) / (b0 + a1/(b1 + a2/(b2 + ...))) by modified Lentz; `terms(i)` gives (a_i, b_i).
fn continued_fraction(terms: impl Fn(usize) -> (f64, f64), ln_front: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (_, b0) = terms(0);
    let mut b = b0;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..10_000 {
        let (an, bn) = terms(i);
        b = bn;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    ln_front.exp() * h
}

/// The x in [lo, hi] where the increasing `cdf` reaches `p`, by bisection to rounding.
fn invert(cdf: impl Fn(f64) -> f64, p: f64, lo: f64, mut hi: f64) -> f64 {
    while cdf(hi) < p {
        hi *= 2.0;
    }
    let mut lo = lo;
    for _ in 0..200 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if cdf(mid) < p { lo = mid } else { hi = mid }
    }
    lo + (hi - lo) / 2.0
}

/// The quantile at `p` of the χ² distribution with `k` degrees of freedom.
pub fn chi2_quantile(p: f64, k: f64) -> f64 {
    invert(|x| gamma_p(k / 2.0, x / 2.0), p, 0.0, k.max(1.0) * 4.0)
}

/// The quantile at `p` of the F distribution with `d1`, `d2` degrees of freedom.
pub fn f_quantile(p: f64, d1: f64, d2: f64) -> f64 {
    let x = invert(|x| beta_inc(d1 / 2.0, d2 / 2.0, x), p, 0.0, 1.0);
    d2 * x / (d1 * (1.0 - x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn normal_quantiles_match_tables() {
        close(normal_quantile(0.5), 0.0, 1e-15);
        close(normal_quantile(0.975), 1.959_963_984_540_054, 1e-14);
        close(normal_quantile(0.99), 2.326_347_874_040_841, 1e-14);
        close(normal_quantile(0.999), 3.090_232_306_167_813_5, 1e-14);
        close(normal_quantile(1e-10), -6.361_340_902_404_056, 1e-12);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn gamma_and_chi2_match_tables() {
        close(ln_gamma(5.0), 24f64.ln(), 1e-14);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-14);
        close(chi2_quantile(0.99, 3.0), 11.344_866_730_144_373, 1e-10);
        close(chi2_quantile(0.999, 2.0), 13.815_510_557_964_274, 1e-10);
        close(chi2_quantile(0.95, 30.0), 43.772_971_825_742_19, 1e-10);
    }

    #[test]
    fn f_quantiles_match_tables() {
        close(f_quantile(0.95, 2.0, 10.0), 4.102_821_015_130_399, 1e-9);
        close(f_quantile(0.99, 3.0, 20.0), 4.938_193_382_310_5, 1e-8);
        // The CDF at the quantile gives back the probability.
        let q = f_quantile(0.999, 5.0, 1000.0);
        close(
            beta_inc(2.5, 500.0, 5.0 * q / (5.0 * q + 1000.0)),
            0.999,
            1e-12,
        );
        // A large denominator tends to χ²/k.
        close(
            f_quantile(0.99, 3.0, 1e6) * 3.0,
            chi2_quantile(0.99, 3.0),
            1e-4,
        );
    }
}
