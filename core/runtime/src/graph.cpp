#include <map>
#include <sstream>
#include <stdexcept>

#include "lal/runtime/pipeline.hpp"

namespace lal::runtime {

namespace {

struct Edge {
  std::string from, to, topic, type;
  bool request = false;
  bool feedback = false;
};

std::vector<Edge> collect_edges(const PipelineSpec& spec) {
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> producers;  // topic → (node, type)
  std::map<std::string, std::string> server_of;                                      // topic → module id
  producers[spec.input_topic].push_back({"input", "lal.Percept/1"});
  for (const auto& m : spec.modules) {
    if (!m.loaded) continue;
    for (const auto& w : m.wires) {
      const PortSpec* p = m.loaded->descriptor->find_port(w.port);
      if (!p) continue;
      if (p->direction == PortDirection::output) producers[w.topic].push_back({m.id, p->type});
      if (p->direction == PortDirection::server) server_of[w.topic] = m.id;
    }
  }
  std::vector<Edge> edges;
  for (const auto& m : spec.modules) {
    if (!m.loaded) continue;
    for (const auto& w : m.wires) {
      const PortSpec* p = m.loaded->descriptor->find_port(w.port);
      if (!p) continue;
      if (p->direction == PortDirection::input) {
        for (const auto& [from, type] : producers[w.topic]) edges.push_back({from, m.id, w.topic, type, false, w.feedback});
      } else if (p->direction == PortDirection::client) {
        auto it = server_of.find(w.topic);
        if (it != server_of.end())
          edges.push_back({m.id, it->second, w.topic, p->type + " → " + p->reply_type, true, false});
      }
    }
  }
  return edges;
}

std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::string render_graph(const PipelineSpec& spec, const std::string& format) {
  const auto edges = collect_edges(spec);
  std::ostringstream os;
  if (format == "dot") {
    os << "digraph \"" << dot_escape(spec.name.empty() ? spec.file.stem().string() : spec.name) << "\" {\n"
       << "  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"sans-serif\"];\n"
       << "  \"input\" [shape=oval, label=\"input\\n" << dot_escape(spec.input_topic) << "\"];\n";
    for (const auto& m : spec.modules) {
      os << "  \"" << dot_escape(m.id) << "\" [label=\"" << dot_escape(m.id) << "\\n(" << dot_escape(m.plugin);
      if (m.loaded) os << ", " << to_string(m.loaded->descriptor->kind);
      os << ")\"];\n";
    }
    for (const auto& e : edges) {
      os << "  \"" << dot_escape(e.from) << "\" -> \"" << dot_escape(e.to) << "\" [label=\"" << dot_escape(e.topic)
         << "\\n" << dot_escape(e.type) << "\"";
      if (e.request) os << ", style=dashed";
      if (e.feedback) os << ", style=dotted, constraint=false, color=gray";  // a back edge: it does not rank
      os << "];\n";
    }
    os << "}\n";
  } else if (format == "mermaid") {
    auto id = [](const std::string& s) {
      std::string out = "m_";
      for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
      return out;
    };
    os << "flowchart LR\n  m_input([\"input: " << spec.input_topic << "\"])\n";
    for (const auto& m : spec.modules) {
      os << "  " << id(m.id) << "[\"" << m.id << "<br/>(" << m.plugin;
      if (m.loaded) os << ", " << to_string(m.loaded->descriptor->kind);
      os << ")\"]\n";
    }
    // As in DOT: requests dashed; feedback edges dotted, and grey (linkStyle) so the loop reads as a back edge.
    std::vector<std::size_t> feedback;
    for (std::size_t i = 0; i < edges.size(); ++i) {
      const auto& e = edges[i];
      const char* arrow = e.request ? " -.->|\"" : e.feedback ? " ..->|\"feedback: " : " -->|\"";
      os << "  " << (e.from == "input" ? "m_input" : id(e.from)) << arrow << e.topic << ": " << e.type << "\"| "
         << id(e.to) << "\n";
      if (e.feedback) feedback.push_back(i);
    }
    for (std::size_t i : feedback) os << "  linkStyle " << i << " stroke:gray,stroke-dasharray:2 4\n";
  } else {
    throw std::invalid_argument("unknown graph format '" + format + "' (dot or mermaid)");
  }
  return os.str();
}

}  // namespace lal::runtime
