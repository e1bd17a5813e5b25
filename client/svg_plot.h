// A latency-vs-throughput chart as a standalone SVG file: one line per
// series, throughput on a linear x axis from 0, latency on a log y axis (a
// sparse and a dense path differ by orders of magnitude). No dependencies;
// any browser shows it.
#ifndef SPARSE_CLIENT_SVG_PLOT_H_
#define SPARSE_CLIENT_SVG_PLOT_H_

#include <string>
#include <vector>

namespace sparse {

struct PlotSeries {
  std::string name;   // legend text, e.g. "sparse p50"
  std::string color;  // any SVG colour
  bool dashed = false;
  std::vector<std::pair<double, double>> points;  // (throughput req/s, latency us), in order
};

// `title` and `subtitle` are printed above the chart (escaped).
std::string LatencyThroughputSvg(const std::string& title, const std::string& subtitle,
                                 const std::vector<PlotSeries>& series);

}  // namespace sparse

#endif  // SPARSE_CLIENT_SVG_PLOT_H_
