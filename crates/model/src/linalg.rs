//! The eigendecomposition of a small symmetric matrix (d×d with d up to a few hundred), by the
//! cyclic Jacobi method: slow for big matrices, but simple, and accurate to rounding.

/// Eigenvalues (descending) and eigenvectors of the symmetric `d`×`d` matrix `a` (row-major).
/// `vectors[i]` is the unit eigenvector of `values[i]`, its largest-magnitude entry positive so
/// that the result does not depend on rounding.
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), d * d);
    let mut m = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let scale: f64 = m
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * d + j] * m[i * d + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = m[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let app = m[p * d + p];
                let aqq = m[q * d + q];
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let mkp = m[k * d + p];
                    let mkq = m[k * d + q];
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let mpk = m[p * d + k];
                    let mqk = m[q * d + k];
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| m[j * d + j].total_cmp(&m[i * d + i]));
    let values = order.iter().map(|&i| m[i * d + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| {
            let mut col: Vec<f64> = (0..d).map(|k| v[k * d + i]).collect();
            let big = col
                .iter()
                .copied()
                .fold(0.0_f64, |acc, x| if x.abs() > acc.abs() { x } else { acc });
            if big < 0.0 {
                col.iter_mut().for_each(|x| *x = -*x);
            }
            col
        })
        .collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposes_a_known_matrix() {
        // Eigenvalues of [[2,1],[1,2]] are 3 and 1, with vectors (1,1)/√2 and (1,-1)/√2.
        let (values, vectors) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((values[0] - 3.0).abs() < 1e-14 && (values[1] - 1.0).abs() < 1e-14);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vectors[0][0] - r).abs() < 1e-14 && (vectors[0][1] - r).abs() < 1e-14);
        assert!((vectors[1][0].abs() - r).abs() < 1e-14);
    }

    #[test]
    fn reconstructs_the_matrix() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (values, vectors) = symmetric_eigen(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3)
                    .map(|k| values[k] * vectors[k][i] * vectors[k][j])
                    .sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
    }
}
