;; A component with two core modules, each with its own linear memory. The
;; handler grows memory A by $A_PAGES pages, then memory B by $B_PAGES, and
;; traps if either growth fails. Each memory alone stays under the 128 MiB
;; limit; together they must not (the limit counts all of a component's
;; memories). The test substitutes the page counts.
(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $incoming-request))
  (alias export $types "response-outparam" (type $response-outparam))

  (core module $a
    (memory 1)
    (func (export "grow") (param i32) (result i32)
      (memory.grow (local.get 0))))
  (core instance $ia (instantiate $a))

  (core module $b
    (import "a" "grow" (func $grow_a (param i32) (result i32)))
    (memory 1)
    (func (export "handle") (param i32 i32)
      (if (i32.eq (call $grow_a (i32.const $A_PAGES)) (i32.const -1)) (then unreachable))
      (if (i32.eq (memory.grow (i32.const $B_PAGES)) (i32.const -1)) (then unreachable))))
  (core instance $ib (instantiate $b (with "a" (instance $ia))))

  (func $handle (param "request" (own $incoming-request)) (param "response-out" (own $response-outparam))
    (canon lift (core func $ib "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))
