# find_package(Outpost) for C and C++ projects. Gives two imported targets:
#   Outpost::outpost         the shared library (liboutpost.so / .dylib / outpost.dll)
#   Outpost::outpost_static  the static library (liboutpost.a), with the system
#                            libraries it needs
# and Outpost_INCLUDE_DIRS. Installed by ffi/install.sh under PREFIX/lib/cmake/Outpost;
# relocatable: it finds the rest of the install from its own location.
include(CMakeFindDependencyMacro)
get_filename_component(_outpost_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(Outpost_INCLUDE_DIRS "${_outpost_prefix}/include")

set(_outpost_shared
    "${_outpost_prefix}/lib/${CMAKE_SHARED_LIBRARY_PREFIX}outpost${CMAKE_SHARED_LIBRARY_SUFFIX}")
if(NOT TARGET Outpost::outpost AND EXISTS "${_outpost_shared}")
  add_library(Outpost::outpost SHARED IMPORTED)
  set_target_properties(Outpost::outpost PROPERTIES
    IMPORTED_LOCATION "${_outpost_shared}"
    INTERFACE_INCLUDE_DIRECTORIES "${Outpost_INCLUDE_DIRS}")
endif()

set(_outpost_static
    "${_outpost_prefix}/lib/${CMAKE_STATIC_LIBRARY_PREFIX}outpost${CMAKE_STATIC_LIBRARY_SUFFIX}")
if(NOT TARGET Outpost::outpost_static AND EXISTS "${_outpost_static}")
  find_dependency(Threads)
  add_library(Outpost::outpost_static STATIC IMPORTED)
  # What Rust's standard library and the bundled C code need from the system
  # (rustc --print native-static-libs).
  if(APPLE)
    set(_outpost_native "-framework Security;-framework CoreFoundation;m")
  elseif(WIN32)
    set(_outpost_native "ws2_32;userenv;bcrypt;ntdll")
  else()
    set(_outpost_native "dl;m;rt")
    # tract's assembly kernels carry no .note.GNU-stack section; without this the
    # linker would give the program an executable stack (rustc passes it itself).
    set_target_properties(Outpost::outpost_static PROPERTIES
      INTERFACE_LINK_OPTIONS "LINKER:-z,noexecstack")
  endif()
  set_target_properties(Outpost::outpost_static PROPERTIES
    IMPORTED_LOCATION "${_outpost_static}"
    INTERFACE_INCLUDE_DIRECTORIES "${Outpost_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${_outpost_native}")
endif()

if(NOT TARGET Outpost::outpost AND NOT TARGET Outpost::outpost_static)
  set(Outpost_FOUND FALSE)
  set(Outpost_NOT_FOUND_MESSAGE "no Outpost library under ${_outpost_prefix}/lib")
endif()
unset(_outpost_shared)
unset(_outpost_static)
