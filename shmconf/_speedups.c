/* shmconf._speedups: the two read-side paths that Python code cannot make cheap.
 *
 * Optional: shmconf/_fastpath.py and shmconf/frozen.py hold the same
 * behaviour in Python and use it when this module is not built (no C
 * compiler at install time, or SHMCONF_SPEEDUPS=0 at run time).
 *
 * 1. FastPath.get(), the fast path of Reader.get() (docs/design.md, R1): one
 *    acquire load of the generation word, a compare, the cached snapshot.
 *    In Python the method call alone costs more than a dict lookup.
 *
 * 2. freeze(), which gives the dicts and lists that orjson.loads just built
 *    their read-only classes (shmconf.frozen.FrozenDict and FrozenList) in
 *    place, the same thing `obj.__class__ = FrozenDict` does for a
 *    heap-type instance: the two classes add no field to dict and list (no
 *    __dict__, no __weakref__, no slots), so an instance of either has the
 *    same memory layout, allocator and deallocator as its base. Python
 *    refuses the assignment for instances of builtin types only because
 *    such objects may be shared (cached constants); a container that
 *    orjson.loads made a moment ago is referenced by its parent alone,
 *    which freeze() checks, refusing any container that is shared. register()
 *    checks the layouts once.
 *
 * Never built for a free-threaded CPython: FastPath relies on the GIL to
 * keep a snapshot and the generation it was stored with paired.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifdef Py_GIL_DISABLED
#error "shmconf._speedups needs the GIL; the pure-Python paths serve free-threaded builds"
#endif

static PyTypeObject *frozen_dict_type = NULL;
static PyTypeObject *frozen_list_type = NULL;

/* -- freeze ------------------------------------------------------------------------ */

/* Give `root` and every dict and list below it their read-only classes,
 * children before their parents.
 *
 * The walk keeps its own stack on the heap, so no depth is too deep for a
 * thread's C stack. It calls no Python code and changes no container's
 * contents (it only sets classes), so nothing can change what it walks. A
 * child container that something else holds too (a reference count above 1)
 * is refused, not frozen: changing its class would change it for its other
 * holders. orjson's fresh output and shmconf.frozen.freeze()'s copies never
 * share one. A refusal leaves the containers walked so far frozen. */
typedef struct {
    PyObject *op;
    Py_ssize_t pos;  /* PyDict_Next's position, or the next list index */
} Frame;

static int
is_container(PyObject *op)
{
    return PyDict_CheckExact(op) || PyList_CheckExact(op);
}

static int
freeze_tree(PyObject *root)
{
    if (!is_container(root)) {
        return 0;
    }
    Py_ssize_t capacity = 64, depth = 0;
    Frame *stack = PyMem_Malloc((size_t)capacity * sizeof(Frame));
    if (stack == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    stack[depth++] = (Frame){root, 0};
    while (depth > 0) {
        Frame *top = &stack[depth - 1];
        PyObject *child = NULL;
        if (PyDict_CheckExact(top->op)) {
            PyObject *key, *value;
            if (PyDict_Next(top->op, &top->pos, &key, &value)) {
                child = value;
            }
        }
        else if (top->pos < PyList_GET_SIZE(top->op)) {
            child = PyList_GET_ITEM(top->op, top->pos++);
        }
        if (child == NULL) {  /* every child done: this one's turn */
            PyTypeObject *frozen = PyDict_CheckExact(top->op) ? frozen_dict_type
                                                              : frozen_list_type;
            Py_INCREF(frozen);
            Py_SET_TYPE(top->op, frozen);
            depth--;
            continue;
        }
        if (!is_container(child)) {
            continue;  /* a scalar, or a container frozen already */
        }
        if (Py_REFCNT(child) != 1) {
            PyMem_Free(stack);
            PyErr_SetString(PyExc_ValueError,
                            "freeze() takes fresh containers only: one is held elsewhere too");
            return -1;
        }
        if (depth == capacity) {
            Frame *grown = PyMem_Realloc(stack, (size_t)capacity * 2 * sizeof(Frame));
            if (grown == NULL) {
                PyMem_Free(stack);
                PyErr_NoMemory();
                return -1;
            }
            stack = grown;
            capacity *= 2;
        }
        stack[depth++] = (Frame){child, 0};
    }
    PyMem_Free(stack);
    return 0;
}

static PyObject *
speedups_freeze(PyObject *Py_UNUSED(module), PyObject *value)
{
    if (frozen_dict_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "shmconf._speedups.register() was not called");
        return NULL;
    }
    /* The top level is the caller's to hand over: shmconf.frozen passes
     * orjson's fresh result, which nothing else holds. */
    if (freeze_tree(value) < 0) {
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

/* Whether `type` adds nothing to `base`'s layout: what makes the in-place
 * change of class sound (CPython checks the same in object.__class__'s setter). */
static int
same_layout(PyTypeObject *type, PyTypeObject *base)
{
    if (!PyType_IsSubtype(type, base)
        || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE)
        || type->tp_basicsize != base->tp_basicsize
        || type->tp_itemsize != base->tp_itemsize
        || type->tp_dictoffset != 0
        || type->tp_weaklistoffset != 0
        || type->tp_free != base->tp_free
        || type->tp_finalize != NULL
        || type->tp_del != NULL) {
        return 0;
    }
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        return 0;
    }
#endif
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
    if (type->tp_flags & Py_TPFLAGS_MANAGED_WEAKREF) {
        return 0;
    }
#endif
    return 1;
}

static PyObject *
speedups_register(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyTypeObject *dict_type, *list_type;
    if (!PyArg_ParseTuple(args, "O!O!:register", &PyType_Type, &dict_type,
                          &PyType_Type, &list_type)) {
        return NULL;
    }
    if (!same_layout(dict_type, &PyDict_Type) || !same_layout(list_type, &PyList_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "register(): the classes must be dict and list subclasses that "
                        "add no field (__slots__ = ())");
        return NULL;
    }
    Py_INCREF(dict_type);
    Py_INCREF(list_type);
    Py_XSETREF(frozen_dict_type, dict_type);
    Py_XSETREF(frozen_list_type, list_type);
    Py_RETURN_NONE;
}

/* -- FastPath ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *words;         /* the anchor's words: a memoryview of 8-byte items */
    Py_buffer view;          /* held while `words` is set: the mapping stays open */
    int has_view;
    const uint64_t *word;    /* word 2 (the generation) of `view`, or NULL */
    PyObject *gen;           /* the generation of `snapshot` (a Python int) */
    uint64_t gen_value;
    int gen_valid;           /* gen >= 0: a generation the anchor can hold */
    PyObject *snapshot;
} FastPath;

static PyObject *refresh_name = NULL;

static PyObject *
fastpath_get(FastPath *self, PyObject *Py_UNUSED(ignored))
{
    /* R1: an acquire load of the generation word, compared to the cache. */
    const uint64_t *word = self->word;
    if (word != NULL && self->gen_valid
            && __atomic_load_n(word, __ATOMIC_ACQUIRE) == self->gen_value
            && self->snapshot != NULL) {
        Py_INCREF(self->snapshot);
        return self->snapshot;
    }
    return PyObject_CallMethodNoArgs((PyObject *)self, refresh_name);
}

static void
release_words(FastPath *self)
{
    self->word = NULL;
    if (self->has_view) {
        self->has_view = 0;
        PyBuffer_Release(&self->view);
    }
    Py_CLEAR(self->words);
}

static PyObject *
get_words(FastPath *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->words != NULL ? self->words : Py_None);
}

static int
set_words(FastPath *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || value == Py_None) {
        release_words(self);
        return 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(value, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return -1;
    }
    /* Unsigned 64-bit words, as the anchor's memoryview.cast("Q") gives them. */
    if (view.itemsize != 8 || view.format == NULL || strcmp(view.format, "Q") != 0
            || view.len < 3 * 8 || ((uintptr_t)view.buf % 8) != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError,
                        "_words: an aligned view of at least 3 8-byte words (format 'Q')");
        return -1;
    }
    /* The new view first, then the old one released: get() never loads from
     * a released buffer (both happen under the GIL). */
    Py_buffer old_view = self->view;
    int had_view = self->has_view;
    PyObject *old_words = self->words;
    self->view = view;
    self->has_view = 1;
    self->word = (const uint64_t *)view.buf + 2;
    self->words = Py_NewRef(value);
    if (had_view) {
        PyBuffer_Release(&old_view);
    }
    Py_XDECREF(old_words);
    return 0;
}

static PyObject *
get_gen(FastPath *self, void *Py_UNUSED(closure))
{
    return self->gen != NULL ? Py_NewRef(self->gen) : PyLong_FromLong(-1);
}

static int
set_gen(FastPath *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || !PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "_gen must be an int");
        return -1;
    }
    int valid = 1;
    unsigned long long number = PyLong_AsUnsignedLongLong(value);
    if (number == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();  /* -1 (nothing held yet): no word ever equals it */
        valid = 0;
        number = 0;
    }
    /* Cleared first: a get() between these stores takes the slow path. */
    self->gen_valid = 0;
    self->gen_value = (uint64_t)number;
    Py_XSETREF(self->gen, Py_NewRef(value));
    self->gen_valid = valid;
    return 0;
}

static PyObject *
get_snapshot(FastPath *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->snapshot != NULL ? self->snapshot : Py_None);
}

static int
set_snapshot(FastPath *self, PyObject *value, void *Py_UNUSED(closure))
{
    Py_XSETREF(self->snapshot, Py_XNewRef(value));
    return 0;
}

static int
fastpath_traverse(FastPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->words);
    Py_VISIT(self->gen);
    Py_VISIT(self->snapshot);
    return 0;
}

static int
fastpath_clear(FastPath *self)
{
    release_words(self);
    Py_CLEAR(self->gen);
    Py_CLEAR(self->snapshot);
    self->gen_valid = 0;
    return 0;
}

static void
fastpath_dealloc(FastPath *self)
{
    PyObject_GC_UnTrack(self);
    fastpath_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(get_doc,
"get()\n--\n\n"
"The current snapshot: a model instance, or a read-only mapping.\n\n"
"Costs one 8-byte load and a compare while the config is unchanged;\n"
"the first call after a publish copies, checks and parses it once.");

static PyMethodDef fastpath_methods[] = {
    {"get", (PyCFunction)fastpath_get, METH_NOARGS, get_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fastpath_getset[] = {
    {"_words", (getter)get_words, (setter)set_words,
     "the anchor's words; get() loads word 2 of them", NULL},
    {"_gen", (getter)get_gen, (setter)set_gen, "generation of the cached snapshot", NULL},
    {"_snapshot", (getter)get_snapshot, (setter)set_snapshot, "the cached snapshot", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmconf._speedups.FastPath",
    .tp_doc = PyDoc_STR("Reader's fast path: get() and the cache it compares (C)."),
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)fastpath_traverse,
    .tp_clear = (inquiry)fastpath_clear,
    .tp_dealloc = (destructor)fastpath_dealloc,
    .tp_methods = fastpath_methods,
    .tp_getset = fastpath_getset,
};

/* -- the module ---------------------------------------------------------------------- */

static PyMethodDef speedups_methods[] = {
    {"freeze", speedups_freeze, METH_O,
     PyDoc_STR("freeze(value) -> value: orjson's fresh dicts and lists given their "
               "read-only classes in place. value itself must be held by the caller alone; "
               "a container below it held elsewhere too is refused (ValueError).")},
    {"register", speedups_register, METH_VARARGS,
     PyDoc_STR("register(frozen_dict, frozen_list): the classes freeze() gives.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shmconf._speedups",
    .m_doc = PyDoc_STR("C paths of shmconf's reader; see shmconf/_speedups.c."),
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    refresh_name = PyUnicode_InternFromString("_refresh");
    if (refresh_name == NULL || PyType_Ready(&FastPathType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&FastPathType);
    if (PyModule_AddObject(module, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(&FastPathType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
