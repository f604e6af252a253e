#include "npy.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "sfv/runtime.hpp"

namespace npy {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw sfv::InputError(msg); }

std::vector<std::uint8_t> read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot read " + path + "; check the path");
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(f), {});
}

std::uint64_t le(const std::uint8_t* p, int n) {
    std::uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
    return v;
}

}  // namespace

std::size_t Array::size() const {
    std::size_t n = 1;
    for (auto d : shape) n *= std::size_t(d);
    return n;
}

std::vector<float> Array::as_float32() const {
    if (dtype != "f4") fail("expected a float32 array, got dtype " + dtype + "; save it with .astype(np.float32)");
    std::vector<float> out(size());
    std::memcpy(out.data(), bytes.data(), out.size() * 4);
    return out;
}

Array parse(const std::uint8_t* data, std::size_t size, const std::string& what) {
    if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0) fail(what + " is not a .npy array (no \\x93NUMPY magic)");
    const int major = data[6];
    const std::size_t hlen = major == 1 ? le(data + 8, 2) : le(data + 8, 4);
    const std::size_t start = (major == 1 ? 10 : 12) + hlen;
    if (start > size) fail(what + " is truncated");
    const std::string header(reinterpret_cast<const char*>(data) + (major == 1 ? 10 : 12), hlen);
    Array a;
    // The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
    auto value_after = [&](const std::string& key) {
        const auto k = header.find("'" + key + "':");
        if (k == std::string::npos) fail(what + ": no " + key + " in the .npy header " + header);
        auto v = k + key.size() + 3;
        while (v < header.size() && header[v] == ' ') ++v;
        return v;
    };
    auto d = value_after("descr");
    const auto d_end = header.find('\'', d + 1);
    if (header[d] != '\'' || d_end == std::string::npos || d_end < d + 3) fail(what + ": unsupported dtype in " + header);
    const char order = header[d + 1];
    if (order == '>') fail(what + " is big-endian; save it with .astype('<f4')");
    a.dtype = header.substr(d + 2, d_end - d - 2);
    if (header.compare(value_after("fortran_order"), 4, "True") == 0) fail(what + " is in Fortran order; save np.ascontiguousarray(x)");
    auto s = value_after("shape");
    const auto s_end = header.find(')', s);
    if (header[s] != '(' || s_end == std::string::npos) fail(what + ": no shape in the .npy header");
    std::istringstream dims(header.substr(s + 1, s_end - s - 1));
    for (std::string tok; std::getline(dims, tok, ',');)
        if (tok.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(tok));
    if (a.dtype.size() < 2 || a.dtype.find_first_not_of("0123456789", 1) != std::string::npos)
        fail(what + ": unsupported dtype '" + a.dtype + "'");
    const std::size_t item = std::stoul(a.dtype.substr(1));
    const std::size_t nbytes = a.size() * item;
    if (start + nbytes > size) fail(what + " is truncated: the header announces " + std::to_string(nbytes) + " bytes of data");
    a.bytes.assign(data + start, data + start + nbytes);
    return a;
}

Array load_npy(const std::string& path) {
    auto b = read_all(path);
    return parse(b.data(), b.size(), path);
}

std::map<std::string, Array> load_npz(const std::string& path) {
    auto z = read_all(path);
    // End of central directory: the last "PK\5\6" record (a comment may follow it).
    std::size_t eocd = std::string::npos;
    for (std::size_t i = z.size() >= 22 ? z.size() - 22 : 0; z.size() >= 22; --i) {
        if (le(&z[i], 4) == 0x06054b50) { eocd = i; break; }
        if (i == 0) break;
    }
    if (eocd == std::string::npos) fail(path + " is not an .npz (zip) file; write it with np.savez");
    std::uint64_t count = le(&z[eocd + 10], 2), cd = le(&z[eocd + 16], 4);
    if (cd == 0xFFFFFFFF || count == 0xFFFF) {  // zip64: the locator sits just before the EOCD
        if (eocd < 20 || le(&z[eocd - 20], 4) != 0x07064b50) fail(path + ": broken zip64 directory");
        const std::uint64_t rec = le(&z[eocd - 12], 8);
        if (rec + 56 > z.size() || le(&z[rec], 4) != 0x06064b50) fail(path + ": broken zip64 directory");
        count = le(&z[rec + 32], 8), cd = le(&z[rec + 48], 8);
    }
    std::map<std::string, Array> out;
    std::size_t p = cd;
    for (std::uint64_t e = 0; e < count; ++e) {
        if (p + 46 > z.size() || le(&z[p], 4) != 0x02014b50) fail(path + ": broken zip central directory");
        const unsigned method = le(&z[p + 10], 2);
        std::uint64_t csize = le(&z[p + 20], 4), usize = le(&z[p + 24], 4), local = le(&z[p + 42], 4);
        const std::size_t nlen = le(&z[p + 28], 2), xlen = le(&z[p + 30], 2), clen = le(&z[p + 32], 2);
        std::string name(reinterpret_cast<const char*>(&z[p + 46]), nlen);
        // zip64 extra field (id 1): the 0xFFFFFFFF fields, in order usize, csize, local offset.
        for (std::size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {
            const unsigned id = le(&z[x], 2), len = le(&z[x + 2], 2);
            if (id == 1) {
                std::size_t q = x + 4;
                if (usize == 0xFFFFFFFF) usize = le(&z[q], 8), q += 8;
                if (csize == 0xFFFFFFFF) csize = le(&z[q], 8), q += 8;
                if (local == 0xFFFFFFFF) local = le(&z[q], 8);
            }
            x += 4 + len;
        }
        if (method != 0)
            fail(path + " is a compressed .npz (member " + name + "); write it with np.savez, not np.savez_compressed");
        if (local + 30 > z.size() || le(&z[local], 4) != 0x04034b50) fail(path + ": broken zip local header for " + name);
        const std::size_t data = local + 30 + le(&z[local + 26], 2) + le(&z[local + 28], 2);
        if (data + csize > z.size()) fail(path + ": member " + name + " is truncated");
        (void)usize;
        std::string key = name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0 ? name.substr(0, name.size() - 4) : name;
        out[key] = parse(&z[data], csize, path + ":" + name);
        p += 46 + nlen + xlen + clen;
    }
    return out;
}

void save(const std::string& path, const std::string& descr, const std::vector<std::int64_t>& shape, const void* data, std::size_t bytes) {
    std::string dims;  // numpy's tuple repr: "(3,)" for one dim, "(2, 3)" otherwise
    for (std::size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
    if (shape.size() == 1) dims += ",";
    std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    header.append(63 - (10 + header.size()) % 64, ' ');  // pad so data starts at a multiple of 64
    header += '\n';
    const std::string tmp = path + ".tmp" + std::to_string(::getpid());
    {
        std::ofstream f(tmp, std::ios::binary);
        const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(header.size() & 255), (unsigned char)(header.size() >> 8)};
        f.write(reinterpret_cast<const char*>(pre), 10);
        f << header;
        f.write(static_cast<const char*>(data), std::streamsize(bytes));
        if (!f.flush()) {
            std::remove(tmp.c_str());
            fail("cannot write " + path + "; check the directory exists and is writable");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        fail("cannot write " + path + "; check the directory exists and is writable");
    }
}

}  // namespace npy
