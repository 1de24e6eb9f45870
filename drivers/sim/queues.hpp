#pragma once

// The simulated hardware's hand-offs between threads, without locks on the way:
//   bounded_ring – a fixed-size ring of values (D. Vyukov's bounded MPMC queue), for the
//                  requests guest threads raise and a poller takes;
//   intrusive_mpsc – a queue of nodes embedded in their owners (Vyukov's intrusive MPSC
//                  queue), for the VCPUs other threads hand to a guest thread.

#include <atomic>
#include <bit>
#include <cstddef>
#include <memory>

namespace vmitap::sim {

template <class T>
class bounded_ring {
public:
  explicit bounded_ring(size_t min_capacity) :
    mask_(std::bit_ceil(std::max<size_t>(min_capacity, 2)) - 1),
    cells_(std::make_unique<cell[]>(mask_ + 1)) {
    for (size_t i = 0; i <= mask_; ++i)
      cells_[i].seq.store(i, std::memory_order_relaxed);
  }

  /// False if the ring is full.
  bool push(const T& value) {
    size_t pos = enqueue_.load(std::memory_order_relaxed);
    cell* c;
    for (;;) {
      c = &cells_[pos & mask_];
      auto seq = c->seq.load(std::memory_order_acquire);
      auto diff = intptr_t(seq) - intptr_t(pos);
      if (diff == 0) {
        if (enqueue_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed))
          break;
      } else if (diff < 0) {
        return false;
      } else {
        pos = enqueue_.load(std::memory_order_relaxed);
      }
    }
    c->value = value;
    c->seq.store(pos + 1, std::memory_order_release);
    return true;
  }

  /// False if nothing is ready (empty, or a push in progress).
  bool pop(T& out) {
    size_t pos = dequeue_.load(std::memory_order_relaxed);
    cell* c;
    for (;;) {
      c = &cells_[pos & mask_];
      auto seq = c->seq.load(std::memory_order_acquire);
      auto diff = intptr_t(seq) - intptr_t(pos + 1);
      if (diff == 0) {
        if (dequeue_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed))
          break;
      } else if (diff < 0) {
        return false;
      } else {
        pos = dequeue_.load(std::memory_order_relaxed);
      }
    }
    out = c->value;
    c->seq.store(pos + mask_ + 1, std::memory_order_release);
    return true;
  }

  /// Nothing pushed that is not popped (a push in progress counts as something).
  bool empty() const {
    return enqueue_.load(std::memory_order_seq_cst) == dequeue_.load(std::memory_order_seq_cst);
  }

private:
  struct cell {
    std::atomic<size_t> seq;
    T value;
  };
  const size_t mask_;
  std::unique_ptr<cell[]> cells_;
  alignas(64) std::atomic<size_t> enqueue_{0};
  alignas(64) std::atomic<size_t> dequeue_{0};
};

struct mpsc_node {
  std::atomic<mpsc_node*> next{nullptr};
};

/// Many producers push nodes they own; one consumer pops them. A node is in the queue at
/// most once at a time (its owner makes sure).
class intrusive_mpsc {
public:
  intrusive_mpsc() : head_(&stub_), tail_(&stub_) {}
  intrusive_mpsc(const intrusive_mpsc&) = delete;
  intrusive_mpsc& operator=(const intrusive_mpsc&) = delete;

  void push(mpsc_node* n) {
    n->next.store(nullptr, std::memory_order_relaxed);
    auto* prev = head_.exchange(n, std::memory_order_acq_rel);
    prev->next.store(n, std::memory_order_release);
  }

  /// The oldest node, or none (empty, or a producer is between its two stores).
  mpsc_node* pop() {
    auto* tail = tail_;
    auto* next = tail->next.load(std::memory_order_acquire);
    if (tail == &stub_) {
      if (!next)
        return nullptr;
      tail_ = next;
      tail = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next) {
      tail_ = next;
      return tail;
    }
    if (tail != head_.load(std::memory_order_acquire))
      return nullptr;  // a push is in progress: it is there in a moment
    push(&stub_);
    next = tail->next.load(std::memory_order_acquire);
    if (next) {
      tail_ = next;
      return tail;
    }
    return nullptr;
  }

  /// Something was pushed and not popped (seen from the consumer).
  bool maybe_nonempty() const {
    return head_.load(std::memory_order_seq_cst) != &stub_ || tail_ != &stub_;
  }

private:
  std::atomic<mpsc_node*> head_;
  mpsc_node* tail_;  // the consumer's
  mpsc_node stub_;
};

}  // namespace vmitap::sim
