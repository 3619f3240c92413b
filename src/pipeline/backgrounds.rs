//! The offline backgrounds: slow colour gradients, soft moving light, an aurora band and bokeh,
//! with film grain and a vignette, in a palette chosen from the video's subject.
//!
//! Each is one lavfi graph of cheap filters (gradients drawn at half size and scaled up, blend,
//! overlay of one small disc sprite; no per-pixel expressions), made at a small size (see
//! `footage::generated_size`) that the render scales up, so a clip costs well under its own length
//! of CPU. Invariants: a subject always gets the same palette, a (recipe, seed) pair always the same
//! graph; every recipe moves (the gradients drift, the lights travel, the discs rise) and none is a
//! test pattern.

/// A palette: `deep` (shadows), `mid`, `bright` (the gradient's light end), `accent` (light and
/// bokeh), each `0xRRGGBB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Palette {
    pub name: &'static str,
    pub deep: u32,
    pub mid: u32,
    pub bright: u32,
    pub accent: u32,
}

const fn p(name: &'static str, deep: u32, mid: u32, bright: u32, accent: u32) -> Palette {
    Palette {
        name,
        deep,
        mid,
        bright,
        accent,
    }
}

/// The palettes, each with the words of a subject that call for it.
const THEMES: &[(Palette, &[&str])] = &[
    (
        p("ocean", 0x061a33, 0x0b4f6c, 0x1fa5a5, 0xf2d7a0),
        &[
            "ocean", "sea", "water", "fish", "octop", "whale", "shark", "coral", "reef", "wave",
            "beach", "river", "lake", "rain", "dolphin", "marine", "squid", "island", "boat",
        ],
    ),
    (
        p("space", 0x05051a, 0x1c1454, 0x4b2a8a, 0xf5e6b8),
        &[
            "space",
            "star",
            "planet",
            "galax",
            "moon",
            "universe",
            "astronaut",
            "cosmos",
            "night",
            "mars",
            "orbit",
            "rocket",
            "hole",
            "nasa",
            "alien",
        ],
    ),
    (
        p("forest", 0x0b1f14, 0x1f4d2b, 0x5d8c3a, 0xf4e3a1),
        &[
            "forest", "tree", "plant", "nature", "garden", "leaf", "jungle", "animal", "bird",
            "flower", "green", "wood", "mushroom", "insect", "bee", "frog",
        ],
    ),
    (
        p("ember", 0x1f0a05, 0x7a2410, 0xd9641e, 0xffd27a),
        &[
            "fire", "sun", "desert", "volcano", "heat", "summer", "energy", "lava", "burn", "hot",
            "dragon", "light",
        ],
    ),
    (
        p("rose", 0x24060f, 0x6e1630, 0xc2405e, 0xffc9b0),
        &[
            "heart",
            "love",
            "blood",
            "body",
            "health",
            "rose",
            "brain",
            "human",
            "emotion",
            "kiss",
            "date",
            "relationship",
        ],
    ),
    (
        p("gold", 0x0a1410, 0x1e4032, 0x9c7a2b, 0xfff0c2),
        &[
            "money", "gold", "rich", "business", "financ", "econom", "wealth", "invest", "stock",
            "bank", "crypto", "bitcoin", "market", "success",
        ],
    ),
    (
        p("neon", 0x07071c, 0x1b2a7a, 0x7b2fbf, 0x5ff2ff),
        &[
            "tech", "computer", "ai", "robot", "code", "future", "internet", "data", "science",
            "digital", "software", "game", "cyber", "phone", "quantum",
        ],
    ),
    (
        p("ice", 0x0a1626, 0x2d5477, 0x8fb8d8, 0xffffff),
        &[
            "winter", "snow", "ice", "cold", "mountain", "arctic", "polar", "penguin", "frozen",
            "glacier",
        ],
    ),
    (
        p("coffee", 0x140b06, 0x4a2c1a, 0x9a6b43, 0xffe1b3),
        &[
            "food",
            "coffee",
            "cook",
            "bread",
            "chocolate",
            "tea",
            "kitchen",
            "eat",
            "recipe",
            "cake",
        ],
    ),
    (
        p("sepia", 0x17110b, 0x4d3b28, 0x8f7350, 0xf0dcb4),
        &[
            "history", "ancient", "war", "old", "empire", "roman", "egypt", "king", "medieval",
            "museum", "myth",
        ],
    ),
    (
        p("dusk", 0x120d26, 0x45275e, 0xb85c72, 0xffc38a),
        &[
            "city", "dream", "sleep", "music", "art", "travel", "sunset", "mind",
        ],
    ),
];

/// The palette of `subject`: the theme whose words it names most (the earliest named wins a tie),
/// else one chosen by `seed` (the subject's hash), so a subject always gets the same one.
pub fn palette_for(subject: &str, seed: u64) -> Palette {
    let text = subject.to_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut best: Option<(usize, usize, Palette)> = None;
    for (palette, keys) in THEMES {
        let mut hits = 0;
        let mut first = usize::MAX;
        for (i, w) in words.iter().enumerate() {
            let named = keys.iter().any(|k| {
                if k.len() <= 3 {
                    w == k || w.strip_suffix('s') == Some(k)
                } else {
                    w.starts_with(k)
                }
            });
            if named {
                hits += 1;
                first = first.min(i);
            }
        }
        if hits == 0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((h, f, _)) => hits > h || (hits == h && first < f),
        };
        if better {
            best = Some((hits, first, *palette));
        }
    }
    match best {
        Some((_, _, palette)) => palette,
        None => THEMES[(seed >> 8) as usize % THEMES.len()].0,
    }
}

/// The recipes [`source`] knows: 0 drifting gradient with a glow, 1 aurora (a soft band of light
/// sweeping over a gradient), 2 two soft lights travelling, 3 bokeh (soft discs rising and swaying).
pub const RECIPES: usize = 4;

fn hex(c: u32) -> String {
    format!("0x{c:06x}")
}

/// Film grain and a vignette, the finish of every recipe.
pub const FINISH: &str = "format=yuv420p,noise=alls=5:allf=t,vignette=PI/5";

/// A small deterministic generator (splitmix64) for the bokeh's discs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Discs of the bokeh recipe.
const DISCS: usize = 9;

/// The bokeh discs over `[bg]`: one soft round sprite (a radial gradient, shaped by a curve), split
/// and scaled to each disc's size, tinted and made translucent, overlaid at a position that rises
/// and sways with time (wrapping round at the top). Ends with the label `[discs]`.
fn discs(rng: &mut Rng, palette: &Palette, w: u32, h: u32, fps: u32) -> String {
    let mut g = vec![format!(
        "gradients=s=64x64:r={fps}:n=2:c0=white:c1=black:x0=32:y0=32:x1=63:y1=32:type=radial:speed=0.00001,format=gray,lut=y='clip((val-40)*2.2\\,0\\,255)',split={DISCS}{}",
        (0..DISCS).map(|i| format!("[m{i}]")).collect::<String>()
    )];
    let mut prev = "bg".to_string();
    let (wf, hf) = (f64::from(w), f64::from(h));
    for i in 0..DISCS {
        let size = ((wf * [0.06, 0.09, 0.13, 0.18, 0.24, 0.33][rng.next() as usize % 6]) as u32)
            .max(4)
            & !1;
        let colour = if rng.range(0.0, 1.0) < 0.6 {
            palette.accent
        } else {
            palette.bright
        };
        let alpha = rng.range(0.45, 0.85);
        let (x0, y0) = (rng.range(0.0, wf), rng.range(0.0, hf));
        let rise = rng.range(0.01, 0.03) * hf;
        let (sway, sway_speed, phase) = (
            rng.range(0.02, 0.07) * wf,
            rng.range(0.2, 0.6),
            rng.range(0.0, std::f64::consts::TAU),
        );
        let span = h + size;
        let out = if i + 1 == DISCS {
            "discs".to_string()
        } else {
            format!("o{i}")
        };
        g.push(format!(
            "color=c={}:s={size}x{size}:r={fps}[c{i}];[m{i}]scale={size}:{size},lut=y=val*{alpha:.2}[a{i}];[c{i}][a{i}]alphamerge[d{i}];[{prev}][d{i}]overlay=x='{x0:.0}+{sway:.0}*sin({sway_speed:.2}*t+{phase:.2})-{half}':y='mod({start:.0}-{rise:.1}*t\\,{span})-{size}':shortest=1[{out}]",
            hex(colour),
            half = size / 2,
            start = y0 + f64::from(span) * 100.0,
        ));
        prev = out;
    }
    g.join(";")
}

/// The lavfi graph of background `recipe` at `w`x`h` and `fps`, in `palette`, seeded by `seed`.
/// The smooth layers are drawn at half size and scaled up (they have no detail to lose); grain and
/// the vignette are added at full size.
pub fn source(recipe: usize, palette: &Palette, seed: u64, w: u32, h: u32, fps: u32) -> String {
    let (deep, mid, bright, accent) = (
        hex(palette.deep),
        hex(palette.mid),
        hex(palette.bright),
        hex(palette.accent),
    );
    let (hw, hh) = ((w / 2).max(8), (h / 2).max(8));
    let s = seed % 100_000;
    // Slow: a full turn of the base gradient takes minutes; lights travel faster.
    let slow = format!("0.00{}", 2 + seed % 4);
    let grad = |n: u32, c: &[&str], ty: &str, speed: &str, seed: u64| {
        let colours: String = c
            .iter()
            .enumerate()
            .map(|(i, c)| format!(":c{i}={c}"))
            .collect();
        format!("gradients=s={hw}x{hh}:r={fps}:n={n}{colours}:type={ty}:speed={speed}:seed={seed},format=gbrp")
    };
    let up = format!("scale={w}x{h}:flags=bicubic,{FINISH}");
    match recipe % RECIPES {
        0 => format!(
            "{}[base];{}[glow];[base][glow]blend=all_mode=screen:all_opacity=0.35,{up}",
            grad(3, &[&deep, &mid, &bright], "linear", &slow, s),
            grad(2, &[&accent, "0x000000"], "radial", "0.015", s + 11),
        ),
        1 => format!(
            "{}[base];{},gblur=sigma={}[band];[base][band]blend=all_mode=screen:all_opacity=0.7,{up}",
            grad(2, &[&deep, &mid], "linear", &slow, s),
            grad(3, &["0x000000", &bright, "0x000000"], "linear", "0.009", s + 5),
            (hh / 30).max(1),
        ),
        2 => format!(
            "{}[base];{}[l1];{}[l2];[base][l1]blend=all_mode=screen:all_opacity=0.4[b1];[b1][l2]blend=all_mode=screen:all_opacity=0.6,{up}",
            grad(2, &[&deep, &mid], "linear", &slow, s),
            grad(2, &[&accent, "0x000000"], "radial", "0.02", s + 12),
            grad(2, &[&bright, "0x000000"], "radial", "0.013", s + 99),
        ),
        _ => {
            let mut rng = Rng(seed);
            format!(
                "{},scale={w}x{h}:flags=bicubic,format=yuva420p[bg];{};[discs]{FINISH}",
                grad(3, &[&deep, &mid, &deep], "linear", &slow, s),
                discs(&mut rng, palette, w, h, fps),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_chooses_the_palette() {
        assert_eq!(
            palette_for("Why octopuses have three hearts", 1).name,
            "ocean"
        );
        assert_eq!(palette_for("How black holes bend light", 1).name, "space");
        assert_eq!(
            palette_for("Five habits of rich people: money", 1).name,
            "gold"
        );
        assert_eq!(palette_for("Why the heart never rests", 1).name, "rose");
        assert_eq!(palette_for("What AI will do to jobs", 1).name, "neon");
        // Nothing named: the seed chooses, always the same for one seed.
        let a = palette_for("Zxqv", 12345);
        assert_eq!(a, palette_for("Zxqv", 12345));
        let all: std::collections::HashSet<&str> = (0..64u64)
            .map(|s| palette_for("Zxqv", s << 8).name)
            .collect();
        assert!(all.len() > 5, "{all:?}");
    }

    #[test]
    fn recipes_are_seeded_distinct_and_avoid_per_pixel_expressions() {
        let pal = palette_for("octopus", 0);
        let graphs: Vec<String> = (0..RECIPES)
            .map(|r| source(r, &pal, 42, 54, 96, 30))
            .collect();
        for (r, g) in graphs.iter().enumerate() {
            assert_eq!(g, &source(r, &pal, 42, 54, 96, 30));
            assert_ne!(
                g,
                &source(r, &pal, 43, 54, 96, 30),
                "recipe {r} ignores its seed"
            );
            assert!(!g.contains("geq"), "recipe {r} uses geq");
            assert!(
                g.contains("0x0b4f6c") || g.contains("0x061a33"),
                "recipe {r}: {g}"
            );
            assert!(g.ends_with(FINISH));
        }
        let distinct: std::collections::HashSet<&String> = graphs.iter().collect();
        assert_eq!(distinct.len(), RECIPES);
    }
}
