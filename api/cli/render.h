// How the CLI shows API objects: JSON with the documented field names
// (activationId, durationMs, startKind "cold", status "success", ...), and
// short human-readable text.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "proto/stoke/v1/api.pb.h"

namespace stoke::cli {

std::string start_kind_name(v1::StartKind kind);        // "cold", "warm", ... ("" when unspecified)
std::string status_name(v1::ActivationStatus status);   // "success", "application_error", ...
std::string runtime_name(v1::Runtime runtime);          // "python", "node", "exec"
bool parse_runtime(const std::string& text, v1::Runtime& out);
bool parse_start_kind(const std::string& text, v1::StartKind& out);

nlohmann::json activation_json(const v1::Activation& a);
nlohmann::json function_json(const v1::Function& f);
nlohmann::json namespace_json(const v1::Namespace& n);
nlohmann::json status_json(const v1::Status& s);

std::string activation_text(const v1::Activation& a);
std::string function_text(const v1::Function& f);

}  // namespace stoke::cli
