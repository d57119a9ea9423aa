;; A component importing an allowed interface with a function the host does
;; not have. Expected: refused at compile, COMPONENT_LINK_FAILED.
(component
  (import "wasi:cli/environment@0.2.0" (instance $env
    (export "get-secrets" (func (result string))))))
