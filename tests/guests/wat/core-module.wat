;; A core module, not a component. Expected: refused at compile, COMPONENT_INVALID.
(module
  (func (export "_start")))
