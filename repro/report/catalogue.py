"""The names of the reports the workflow builds, and where each figure reads its data, without the table and
plotting code. The Snakefile reads these at every start (on a cluster, twice inside every job), so they must
not pull in pandas or matplotlib, which cost about a second to import."""

TABLE_NAMES = ("table_a", "table_b", "topn_methods", "guidance", "matched_l0", "probing")
EXTERNAL_TABLE = "external"  # built only when the config lists external SAEs (config key `external`)

FIGURE_DATA = ("latents", "training_curves", "l0_distribution", "concepts")

# figure -> its source: "metrics" (the tidy metrics CSV) or the stem of a figure-data JSON
FIGURE_SOURCES = {
    "nmse_vs_size": "metrics",
    "pareto": "metrics",
    "l0_distribution": "l0_distribution",
    "firing_vs_activation": "latents",
    "concepts": "concepts",
    "training_curves": "training_curves",
}
